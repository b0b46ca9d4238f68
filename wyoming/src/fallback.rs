//! A Wyoming server with Hark's own model standing by.
//!
//! When the server fails (down, slow, the connection dropped, an error
//! event), the job is done by the local model if there is one, and the
//! user is told once ([`SpeechToText::take_notice`] becomes an `Error`
//! event). For [`RETRY_AFTER`] the local model answers straight away, so a
//! dead server does not cost every turn a connection attempt or a
//! timeout; then the server is tried again. Without a local model the job
//! fails with the server's error, and the next job tries the server again.
//!
//! The local model is loaded only when first needed: with a healthy
//! server, Hark never spends its memory or start-up time on it.

use std::time::{Duration, Instant};

use hark_stt::{SpeechToText, SttError, Transcript};
use hark_tts::{TtsError, Voice};

use crate::client::{to_session_rate, Deadlines, Endpoint, WyomingStt, WyomingVoice};

/// How long a failed server is left alone.
pub const RETRY_AFTER: Duration = Duration::from_secs(15);

/// Loads a local model when first needed.
pub type Loader<T> = Box<dyn FnMut() -> Result<Box<T>, String> + Send>;

/// A local model: not yet needed, loaded, or failed to load (not retried).
enum Standby<T: ?Sized> {
    None,
    Unloaded(Loader<T>),
    Loaded(Box<T>),
    Failed(String),
}

impl<T: ?Sized> Standby<T> {
    fn new(loader: Option<Loader<T>>) -> Self {
        loader.map_or(Standby::None, Standby::Unloaded)
    }

    /// The model, loading it now if need be; `None` without one.
    fn get(&mut self) -> Option<Result<&mut T, String>> {
        if let Standby::Unloaded(load) = self {
            *self = match load() {
                Ok(model) => Standby::Loaded(model),
                Err(e) => {
                    tracing::error!("the local stand-in could not be loaded: {e}");
                    Standby::Failed(e)
                }
            };
        }
        match self {
            Standby::None | Standby::Unloaded(_) => None,
            Standby::Loaded(model) => Some(Ok(model.as_mut())),
            Standby::Failed(e) => Some(Err(e.clone())),
        }
    }
}

/// When the server was last found failing.
#[derive(Default)]
struct Health {
    failed_at: Option<Instant>,
}

impl Health {
    fn resting(&self) -> bool {
        self.failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER)
    }
}

/// Speech to text on a Wyoming server, local Whisper standing by.
pub struct SttWithFallback {
    remote: WyomingStt,
    local: Standby<dyn SpeechToText>,
    health: Health,
    notice: Option<String>,
}

impl SttWithFallback {
    pub fn new(remote: WyomingStt, local: Option<Loader<dyn SpeechToText>>) -> Self {
        Self {
            remote,
            local: Standby::new(local),
            health: Health::default(),
            notice: None,
        }
    }
}

impl SpeechToText for SttWithFallback {
    fn transcribe(&mut self, samples: &[f32]) -> Result<Transcript, SttError> {
        let has_local = !matches!(self.local, Standby::None);
        let remote_error = if has_local && self.health.resting() {
            None
        } else {
            match self.remote.transcribe(samples) {
                Ok(transcript) => {
                    if self.health.failed_at.take().is_some() {
                        tracing::info!(server = %self.remote.endpoint(), "the speech-to-text server answers again");
                    }
                    return Ok(transcript);
                }
                Err(e) => {
                    self.health.failed_at = Some(Instant::now());
                    Some(e)
                }
            }
        };
        let Some(local) = self.local.get() else {
            return Err(remote_error.expect("the server is asked when there is no stand-in"));
        };
        let local = local.map_err(|message| SttError::Remote {
            uri: self.remote.endpoint().to_string(),
            message: format!(
                "the server failed and the local Whisper model could not be loaded: {message}"
            ),
        })?;
        if let Some(e) = remote_error {
            let notice = format!(
                "{e}; transcribing with the local Whisper model for now (the server is tried again in {} s)",
                RETRY_AFTER.as_secs()
            );
            tracing::warn!("{notice}");
            self.notice = Some(notice);
        }
        local.transcribe(samples)
    }

    fn take_notice(&mut self) -> Option<String> {
        self.notice.take()
    }
}

/// A voice on a Wyoming server, the local Piper voice standing by. The
/// session's voice rate is fixed when it starts: the server's, or the
/// local voice's when the server could not be reached then; audio from
/// the other is resampled to it.
pub struct VoiceWithFallback {
    endpoint: Endpoint,
    voice: Option<String>,
    deadlines: Deadlines,
    remote: Option<WyomingVoice>,
    local: Standby<dyn Voice>,
    health: Health,
    rate: u32,
    notice: Option<String>,
}

/// The rate assumed for a server not reached at start with no local voice
/// to go by: Piper's medium voices'.
const ASSUMED_RATE: u32 = 22_050;

impl VoiceWithFallback {
    /// Connects to the server; when it cannot be reached, starts anyway
    /// (on the local voice, or failing each clause until the server is
    /// back) and says why in the log.
    pub fn connect(
        endpoint: Endpoint,
        voice: Option<String>,
        deadlines: Deadlines,
        local: Option<Loader<dyn Voice>>,
    ) -> Self {
        let mut this = Self {
            endpoint: endpoint.clone(),
            voice: voice.clone(),
            deadlines,
            remote: None,
            local: Standby::new(local),
            health: Health::default(),
            rate: ASSUMED_RATE,
            notice: None,
        };
        match WyomingVoice::connect(endpoint, voice, deadlines) {
            Ok(remote) => {
                this.rate = remote.sample_rate();
                this.remote = Some(remote);
            }
            Err(e) => {
                this.health.failed_at = Some(Instant::now());
                match this.local.get() {
                    Some(Ok(local)) => {
                        this.rate = local.sample_rate();
                        tracing::warn!("{e}; speaking with the local Piper voice until it answers");
                        this.notice = Some(format!(
                            "{e}; speaking with the local Piper voice until it answers"
                        ));
                    }
                    _ => tracing::error!("{e}; Hark cannot speak until the server answers"),
                }
            }
        }
        this
    }

    /// The server's voice, connecting first if it was not reached before.
    fn remote(&mut self) -> Result<&mut WyomingVoice, TtsError> {
        if self.remote.is_none() {
            let remote =
                WyomingVoice::connect(self.endpoint.clone(), self.voice.clone(), self.deadlines)?;
            tracing::info!(server = %self.endpoint, "the text-to-speech server answers");
            self.remote = Some(remote);
        }
        Ok(self.remote.as_mut().expect("set above"))
    }

    fn at_rate(&self, audio: Vec<f32>, rate: u32) -> Vec<f32> {
        if rate == self.rate {
            audio
        } else {
            to_session_rate(&audio, rate, self.rate)
        }
    }
}

impl Voice for VoiceWithFallback {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
        let has_local = !matches!(self.local, Standby::None);
        let remote_error = if has_local && self.health.resting() {
            None
        } else {
            match self.remote().and_then(|r| {
                let rate = r.sample_rate();
                r.synthesize(text).map(|audio| (audio, rate))
            }) {
                Ok((audio, rate)) => {
                    if self.health.failed_at.take().is_some() {
                        tracing::info!(server = %self.endpoint, "the text-to-speech server answers again");
                    }
                    return Ok(self.at_rate(audio, rate));
                }
                Err(e) => {
                    self.health.failed_at = Some(Instant::now());
                    Some(e)
                }
            }
        };
        let endpoint = self.endpoint.to_string();
        let Some(local) = self.local.get() else {
            return Err(remote_error.expect("the server is asked when there is no stand-in"));
        };
        let local = local.map_err(|message| TtsError::Remote {
            uri: endpoint,
            message: format!(
                "the server failed and the local Piper voice could not be loaded: {message}"
            ),
        })?;
        let rate = local.sample_rate();
        let audio = local.synthesize(text)?;
        if let Some(e) = remote_error {
            let notice = format!(
                "{e}; speaking with the local Piper voice for now (the server is tried again in {} s)",
                RETRY_AFTER.as_secs()
            );
            tracing::warn!("{notice}");
            self.notice = Some(notice);
        }
        Ok(self.at_rate(audio, rate))
    }

    fn take_notice(&mut self) -> Option<String> {
        self.notice.take()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::testing::quick;
    use hark_stt::Segment;

    /// An endpoint nothing listens on.
    fn nowhere() -> Endpoint {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("tcp://127.0.0.1:{port}").parse().unwrap()
    }

    struct LocalStt;

    impl SpeechToText for LocalStt {
        fn transcribe(&mut self, _: &[f32]) -> Result<Transcript, SttError> {
            Ok(Transcript {
                segments: vec![Segment {
                    start_secs: 0.0,
                    end_secs: 0.0,
                    text: "heard here".into(),
                    no_speech_prob: 0.0,
                }],
            })
        }
    }

    struct LocalVoice;

    impl Voice for LocalVoice {
        fn sample_rate(&self) -> u32 {
            16_000
        }
        fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
            Ok(vec![0.5; text.len()])
        }
    }

    fn counting_loader<T: ?Sized + 'static>(make: fn() -> Box<T>) -> (Loader<T>, Arc<AtomicUsize>) {
        let loads = Arc::new(AtomicUsize::new(0));
        let counter = loads.clone();
        let loader: Loader<T> = Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(make())
        });
        (loader, loads)
    }

    #[test]
    fn a_server_that_is_down_is_stood_in_for_once_told_and_then_left_alone() {
        let endpoint = nowhere();
        let uri = endpoint.to_string();
        let (loader, loads) = counting_loader::<dyn SpeechToText>(|| Box::new(LocalStt));
        let mut stt =
            SttWithFallback::new(WyomingStt::new(endpoint, None, None, quick()), Some(loader));
        assert_eq!(loads.load(Ordering::SeqCst), 0, "loaded only when needed");
        assert_eq!(stt.transcribe(&[0.0; 160]).unwrap().text(), "heard here");
        let notice = stt.take_notice().unwrap();
        assert!(
            notice.contains(&uri) && notice.contains("local Whisper"),
            "{notice}"
        );
        assert_eq!(stt.transcribe(&[0.0; 160]).unwrap().text(), "heard here");
        assert_eq!(stt.take_notice(), None, "told once while the server rests");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn without_a_stand_in_the_servers_error_is_the_jobs() {
        let mut stt = SttWithFallback::new(WyomingStt::new(nowhere(), None, None, quick()), None);
        for _ in 0..2 {
            let err = stt.transcribe(&[0.0; 160]).unwrap_err().to_string();
            assert!(err.contains("cannot connect"), "{err}");
        }
        let failing: Loader<dyn SpeechToText> =
            Box::new(|| Err("ggml-tiny.en.bin is corrupt".into()));
        let mut stt = SttWithFallback::new(
            WyomingStt::new(nowhere(), None, None, quick()),
            Some(failing),
        );
        let err = stt.transcribe(&[0.0; 160]).unwrap_err().to_string();
        assert!(
            err.contains("could not be loaded") && err.contains("corrupt"),
            "{err}"
        );
    }

    #[test]
    fn a_voice_server_down_at_start_leaves_the_local_voice_speaking_at_its_rate() {
        let (loader, _) = counting_loader::<dyn Voice>(|| Box::new(LocalVoice));
        let mut voice = VoiceWithFallback::connect(nowhere(), None, quick(), Some(loader));
        assert_eq!(voice.sample_rate(), 16_000);
        assert!(voice.take_notice().unwrap().contains("local Piper"));
        assert_eq!(voice.synthesize("four").unwrap(), vec![0.5; 4]);
        // Without a local voice Hark starts all the same and each clause
        // fails with the server's error until it is back.
        let mut voice = VoiceWithFallback::connect(nowhere(), None, quick(), None);
        assert_eq!(voice.sample_rate(), ASSUMED_RATE);
        let err = voice.synthesize("four").unwrap_err().to_string();
        assert!(err.contains("cannot connect"), "{err}");
    }
}
