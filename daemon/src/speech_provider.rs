//! Hark's voice for every desktop app: `org.freedesktop.Speech.Provider`,
//! the D-Bus interface of GNOME's Spiel (libspiel and the speech portal),
//! served by `hark daemon` as `dev.hark.Speech.Provider` at
//! `/dev/hark/Speech/Provider` (`[desktop] speech_provider`), or alone by
//! `hark speech-provider` (the voice without the assistant).
//!
//! ```text
//!  Synthesize(fd, text, voice, pitch, rate, ssml, language)
//!    │ checks (caller, voice, text, rate, fd) ─▶ Job (bounded: Busy when full)
//!    ▼
//!  "hark-provider": clauses (ClauseSplitter) ─▶ LentVoice (Piper, rate as length_scale)
//!    │ each clause's audio, S16LE
//!    ▼
//!  "hark-provider-out", one per request: the stream into the caller's fd
//! ```
//!
//! The conversation's core is not involved: another application speaking
//! does not become a turn, pause Hark, or wait for Hark's reply. The voice
//! is the one lent to Wyoming too (`lent.rs`), loaded at the first request.
//!
//! Spiel finds providers by name: a bus name ending in `.Speech.Provider`
//! (activatable through `systemd/dev.hark.Speech.Provider.service`), the
//! object at the name with its dots as slashes.
//!
//! The stream is libspeechprovider's (`SpeechProviderStreamWriter`), which
//! the voice's format `audio/x-spiel` announces: the four bytes `0.01`,
//! then chunks, each a type byte (1 audio, 2 event); an audio chunk
//! follows with its length as a u32 in the machine's byte order and that
//! many bytes of PCM (here S16LE, mono, at the voice's rate; each chunk
//! under PIPE_BUF, see [`CHUNK_SAMPLES`]). Hark sends
//! no events (its voices advertise no features). Closing the fd ends the
//! stream; a reader that closes its end cancels the rest.
//!
//! Pitch is checked but not applied (Piper has no pitch control); rate is
//! Piper's `length_scale` divided by it. SSML is read as text: the tags
//! are dropped. The language is the voice's own.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use anyhow::Context;
use hark_converse::{ChunkConfig, ClauseSplitter};

use crate::lent::LentVoice;
use crate::service::{own_name, Authorizer, HarkError};

pub const PROVIDER_NAME: &str = "dev.hark.Speech.Provider";
pub const PROVIDER_PATH: &str = "/dev/hark/Speech/Provider";

/// Longest text `Synthesize` accepts, in bytes (about four minutes of
/// speech, a few MB of audio held for a reader that falls behind).
pub const MAX_TEXT: usize = 4096;
/// Requests queued or being written at once; more are refused as Busy
/// (a client that never reads holds its request's slot until it closes).
const MAX_ACTIVE: usize = 8;
/// Requests waiting for the voice.
const QUEUE: usize = MAX_ACTIVE;
/// Samples per audio chunk of the stream: a whole chunk (5 bytes of type
/// and length, then the PCM) stays within PIPE_BUF (4096 bytes), so each
/// reaches the pipe in one atomic write. libspeechprovider's reader takes
/// a chunk with a single read(2) and would lose its place on a chunk the
/// pipe holds only part of. About 90 ms at 22 kHz.
const CHUNK_SAMPLES: usize = 2040;

/// libspeechprovider's stream protocol version, the stream's first bytes.
const STREAM_HEADER: &[u8; 4] = b"0.01";
/// The chunk type byte of audio (0 is none, 2 an event).
const CHUNK_AUDIO: u8 = 1;

/// One voice as `Voices` lists it.
#[derive(Debug, Clone)]
struct ProviderVoice {
    name: String,
    id: String,
    /// The GStreamer caps of what `Synthesize` writes.
    format: String,
    languages: Vec<String>,
}

/// The object served at [`PROVIDER_PATH`].
pub struct SpeechProvider {
    /// Empty when the voice is not installed.
    voices: Vec<ProviderVoice>,
    jobs: SyncSender<Job>,
    /// Requests accepted and not yet fully written.
    active: Arc<AtomicUsize>,
    auth: Authorizer,
}

/// A request for the "hark-provider" thread.
struct Job {
    out: std::fs::File,
    text: String,
    /// Times the voice's own pace.
    speed: f32,
    /// Freed when the stream is written (or the job dropped).
    _slot: Slot,
}

/// One of the [`MAX_ACTIVE`] places.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SpeechProvider {
    /// The provider over `voice`, its thread started.
    pub fn start(voice: Arc<LentVoice>) -> anyhow::Result<Self> {
        let voices = match voice.describe() {
            Ok(config) => vec![describe(voice.name(), config.sample_rate)],
            Err(e) => {
                tracing::warn!("the speech provider offers no voice: {e:#}");
                Vec::new()
            }
        };
        let (jobs, queue) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("hark-provider".into())
            .spawn(move || synthesize_jobs(&voice, queue))
            .context("cannot start the speech provider's thread")?;
        Ok(Self {
            voices,
            jobs,
            active: Arc::default(),
            auth: Authorizer::new(),
        })
    }

    /// The request checked: what to say and how fast.
    fn check(
        &self,
        text: String,
        voice_id: &str,
        pitch: f64,
        rate: f64,
        is_ssml: bool,
    ) -> Result<(String, f32), HarkError> {
        let invalid = |why: String| HarkError::InvalidArgument(format!("Synthesize: {why}"));
        let Some(voice) = self.voices.first() else {
            return Err(invalid(
                "Hark's voice is not installed (hark models fetch)".into(),
            ));
        };
        if !voice_id.is_empty() && !self.voices.iter().any(|v| v.id == voice_id) {
            let mut shown: String = voice_id.chars().take(80).collect();
            if shown.len() < voice_id.len() {
                shown.push('…');
            }
            return Err(invalid(format!(
                "no voice {shown:?}; Hark offers {:?}",
                voice.id
            )));
        }
        if text.len() > MAX_TEXT {
            return Err(invalid(format!(
                "the text is {} bytes; at most {MAX_TEXT} are accepted",
                text.len()
            )));
        }
        if !(0.1..=10.0).contains(&rate) {
            return Err(invalid(format!(
                "rate {rate} is outside 0.1 to 10 (1 is the voice's own)"
            )));
        }
        if !(0.0..=2.0).contains(&pitch) {
            return Err(invalid(format!(
                "pitch {pitch} is outside 0 to 2 (1 is the voice's own)"
            )));
        }
        let text = if is_ssml { ssml_text(&text) } else { text };
        Ok((text, rate as f32))
    }
}

/// Spiel's description of the Piper voice `name`
/// (`LANGUAGE_REGION-SPEAKER-QUALITY`) speaking at `rate` Hz.
fn describe(name: &str, rate: u32) -> ProviderVoice {
    let mut parts = name.splitn(3, '-');
    let locale = parts.next().unwrap_or_default();
    let speaker = parts.next().unwrap_or(name);
    let quality = parts.next();
    let mut shown: String = speaker
        .chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .chain(speaker.chars().skip(1))
        .collect();
    if let Some(quality) = quality {
        shown.push_str(&format!(" ({quality})"));
    }
    // BCP 47: en_US is en-US, and the language alone as well.
    let mut languages = Vec::new();
    if let Some((language, region)) = locale.split_once('_') {
        languages.push(format!("{language}-{region}"));
        languages.push(language.to_owned());
    } else if !locale.is_empty() && locale != name {
        languages.push(locale.to_owned());
    }
    ProviderVoice {
        name: shown,
        id: name.to_owned(),
        format: format!("audio/x-spiel,format=S16LE,channels=1,rate={rate}"),
        languages,
    }
}

/// The words of an SSML snippet: tags dropped (each a word break), the
/// five XML entities read.
fn ssml_text(ssml: &str) -> String {
    let mut text = String::with_capacity(ssml.len());
    let mut in_tag = false;
    for c in ssml.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Refuses a descriptor not opened for writing (Linux: the access mode in
/// `/proc/self/fdinfo`), so the caller hears why at once.
fn check_writable(fd: &OwnedFd) -> Result<(), HarkError> {
    let invalid = |why: &str| HarkError::InvalidArgument(format!("Synthesize: {why}"));
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .map_err(|_| invalid("the file descriptor cannot be examined"))?;
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .ok_or_else(|| invalid("the file descriptor cannot be examined"))?;
    // O_ACCMODE: 0 read only, 1 write only, 2 both.
    match flags & 0o3 {
        1 | 2 => Ok(()),
        _ => Err(invalid(
            "the file descriptor is not open for writing (pass a pipe's write end)",
        )),
    }
}

#[zbus::interface(name = "org.freedesktop.Speech.Provider")]
impl SpeechProvider {
    /// Writes `text` spoken by `voice_id` into `pipe_fd` (the stream the
    /// voice's format names), then closes it. Returns once the request is
    /// queued; the audio follows as it is synthesized.
    #[allow(clippy::too_many_arguments)]
    async fn synthesize(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        pipe_fd: zbus::OwnedFd,
        text: String,
        voice_id: String,
        pitch: f64,
        rate: f64,
        is_ssml: bool,
        language: String,
    ) -> Result<(), HarkError> {
        self.auth.check(&header, connection).await?;
        let (text, speed) = self.check(text, &voice_id, pitch, rate, is_ssml)?;
        let fd = OwnedFd::from(pipe_fd);
        check_writable(&fd)?;
        if self.active.fetch_add(1, Ordering::SeqCst) >= MAX_ACTIVE {
            self.active.fetch_sub(1, Ordering::SeqCst);
            return Err(HarkError::Busy(format!(
                "Synthesize: {MAX_ACTIVE} requests are under way; try again"
            )));
        }
        let job = Job {
            out: std::fs::File::from(fd),
            text,
            speed,
            _slot: Slot(self.active.clone()),
        };
        tracing::debug!(bytes = job.text.len(), speed, %language, "speech provider: request");
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(HarkError::Busy(
                "Synthesize: the speech queue is full; try again".into(),
            )),
            Err(TrySendError::Disconnected(_)) => Err(HarkError::NotReady(
                "Synthesize: the speech provider has stopped".into(),
            )),
        }
    }

    /// (name, identifier, output format, features, languages) per voice.
    #[zbus(property)]
    async fn voices(&self) -> Vec<(String, String, String, u64, Vec<String>)> {
        self.voices
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    v.id.clone(),
                    v.format.clone(),
                    0,
                    v.languages.clone(),
                )
            })
            .collect()
    }

    #[zbus(property)]
    async fn name(&self) -> String {
        "Hark".into()
    }
}

/// Serves the provider over `voice` on `connection`: the object, then the
/// name (so nobody who sees the name finds the object missing).
pub async fn serve(connection: &zbus::Connection, voice: Arc<LentVoice>) -> anyhow::Result<()> {
    let provider = SpeechProvider::start(voice)?;
    connection
        .object_server()
        .at(PROVIDER_PATH, provider)
        .await
        .context("cannot serve the speech provider")?;
    if !own_name(connection, PROVIDER_NAME).await? {
        anyhow::bail!("{PROVIDER_NAME} is already taken on the session bus");
    }
    Ok(())
}

/// `hark speech-provider`: only the provider, no conversation, until
/// SIGTERM or Ctrl-C.
pub fn run(globals: &crate::Globals) -> anyhow::Result<()> {
    let config = globals.config(&[])?;
    let voice = Arc::new(LentVoice::new(&config.voice, &globals.store()?));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let connection = zbus::connection::Builder::session().build().await.context(
            "cannot connect to the D-Bus session bus (is DBUS_SESSION_BUS_ADDRESS set?)",
        )?;
        serve(&connection, voice).await?;
        tracing::info!(
            name = PROVIDER_NAME,
            path = PROVIDER_PATH,
            "lending Hark's voice to desktop apps (speech provider)"
        );
        crate::lent::until_stopped().await
    })
}

/// The "hark-provider" thread: each request's clauses synthesized in turn
/// and handed to that request's writer.
fn synthesize_jobs(voice: &LentVoice, jobs: Receiver<Job>) {
    for job in jobs {
        let clauses = ClauseSplitter::split(ChunkConfig::default(), &job.text);
        // Room for every clause: the voice never waits for a slow reader.
        let (audio, to_write) = std::sync::mpsc::sync_channel(clauses.len().max(1));
        let Job {
            out,
            speed,
            _slot: slot,
            ..
        } = job;
        let writer = std::thread::Builder::new()
            .name("hark-provider-out".into())
            .spawn(move || write_stream(out, to_write, slot));
        if let Err(e) = writer {
            tracing::warn!("speech provider: cannot start a writer: {e}");
            continue;
        }
        for clause in clauses {
            match voice.synthesize(&clause, speed) {
                Ok((samples, _)) => {
                    if audio.send(samples).is_err() {
                        // The reader closed its end: cancelled.
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!("speech provider: {e}");
                    break;
                }
            }
        }
    }
}

/// Writes the stream header, then each clause's audio as it comes; the
/// descriptor is closed when the clauses end.
fn write_stream(mut out: std::fs::File, clauses: Receiver<Vec<f32>>, _slot: Slot) {
    let written = (|| -> std::io::Result<()> {
        out.write_all(STREAM_HEADER)?;
        for samples in clauses {
            for piece in samples.chunks(CHUNK_SAMPLES) {
                out.write_all(&audio_chunk(&hark_audio::stream::to_s16le(piece)))?;
            }
        }
        out.flush()
    })();
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            tracing::debug!("speech provider: the reader closed the stream")
        }
        Err(e) => tracing::warn!("speech provider: cannot write the stream: {e}"),
    }
}

/// An audio chunk of the stream: type, length (native byte order, as
/// libspeechprovider's reader reads it), PCM.
fn audio_chunk(pcm: &[u8]) -> Vec<u8> {
    let mut chunk = Vec::with_capacity(5 + pcm.len());
    chunk.push(CHUNK_AUDIO);
    chunk.extend_from_slice(&(pcm.len() as u32).to_ne_bytes());
    chunk.extend_from_slice(pcm);
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piper_voice_is_described_as_spiel_expects() {
        let voice = describe("en_US-joe-medium", 22050);
        assert_eq!(voice.name, "Joe (medium)");
        assert_eq!(voice.id, "en_US-joe-medium");
        assert_eq!(
            voice.format,
            "audio/x-spiel,format=S16LE,channels=1,rate=22050"
        );
        assert_eq!(voice.languages, ["en-US", "en"]);
        let odd = describe("myvoice", 16000);
        assert_eq!(odd.name, "Myvoice");
        assert!(odd.languages.is_empty());
    }

    #[test]
    fn ssml_is_read_as_its_words() {
        assert_eq!(
            ssml_text("<speak>Hello<break time=\"1s\"/>world &amp; you &lt;3</speak>"),
            "Hello world & you <3"
        );
        assert_eq!(ssml_text("plain"), "plain");
    }

    #[test]
    fn a_whole_chunk_fits_one_atomic_pipe_write() {
        assert!(audio_chunk(&vec![0; CHUNK_SAMPLES * 2]).len() <= 4096);
    }

    #[test]
    fn an_audio_chunk_is_type_length_and_bytes() {
        let chunk = audio_chunk(&[1, 2, 3]);
        assert_eq!(chunk[0], 1);
        assert_eq!(u32::from_ne_bytes(chunk[1..5].try_into().unwrap()), 3);
        assert_eq!(&chunk[5..], &[1, 2, 3]);
    }

    #[test]
    fn a_read_only_descriptor_is_refused() {
        let (read, write) = std::io::pipe().unwrap();
        assert!(check_writable(&OwnedFd::from(write)).is_ok());
        assert!(check_writable(&OwnedFd::from(read)).is_err());
    }
}
