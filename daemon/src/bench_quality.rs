//! `hark bench quality`'s user: voices that are not Hark's, noises, and a
//! mouth that plays them into a PulseAudio sink the microphone hears.
//!
//! Sources of the user's side (none is Hark's Piper voice):
//! - questions, backchannels and interrupting sentences spoken by
//!   espeak-ng (Debian `espeak-ng`) in six of its voices;
//! - recorded speech: the LibriVox clips of `pocketsphinx-testdata` and
//!   JFK ($HARK_TESTDATA) as interruptions, `goforward.raw` as a question;
//! - noises: the ALSA noise sample (`alsa-utils`), and claps, coughs and
//!   typing synthesized here (bursts of shaped noise).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hark_audio::SAMPLE_RATE;
use hark_session::bench::quality::{Clip, Material, Mouth};
use hark_session::BoxError;

/// espeak-ng voices: American, British, Scottish, Caribbean, two female.
pub const VOICES: &[&str] = &[
    "en-us",
    "en-gb",
    "en-us+f3",
    "en-gb-scotland",
    "en-029",
    "en-gb+f2",
];

const QUESTIONS: &[&str] = &[
    "What is the capital of France?",
    "Tell me something about the ocean.",
    "What do bees make?",
    "Why is the sky blue?",
    "Name a few colors of the rainbow.",
    "What is the largest planet?",
    "How do birds fly?",
];

/// Requests for long replies, to talk over.
const REQUESTS: &[&str] = &[
    "Tell me a long story about a brave knight and a dragon.",
    "Describe the ocean in a few sentences.",
    "Tell me about the history of Rome.",
    "Explain in detail how a rainbow forms.",
];

const BACKCHANNELS: &[&str] = &["mhm", "yeah", "okay", "uh huh", "right", "I see"];

const INTERRUPTIONS: &[&str] = &[
    "Wait, stop. What is two plus two?",
    "Hold on, tell me about the moon instead.",
    "Sorry, I meant to ask about clouds.",
    "Stop please, tell me a joke instead.",
    "No no, that is not what I asked.",
];

/// Peak level of every clip (-6 dBFS), so no voice is favoured by loudness.
const PEAK: f32 = 0.5;

/// Builds the user's side; fails naming what is missing.
pub fn material() -> anyhow::Result<Material> {
    let mut questions = Vec::new();
    let mut requests = Vec::new();
    let mut backchannels = Vec::new();
    let mut interruptions = Vec::new();
    for (k, voice) in VOICES.iter().enumerate() {
        for (i, text) in QUESTIONS.iter().enumerate() {
            if (i + k) % 2 == 0 {
                questions.push(espeak(voice, text)?);
            }
        }
        requests.push(espeak(voice, REQUESTS[k % REQUESTS.len()])?);
        for text in BACKCHANNELS {
            backchannels.push(espeak(voice, text)?);
        }
        for text in INTERRUPTIONS {
            interruptions.push(espeak(voice, text)?);
        }
    }
    let pocketsphinx = Path::new("/usr/share/pocketsphinx/test/data");
    let goforward = pocketsphinx.join("goforward.raw");
    if goforward.is_file() {
        let bytes = std::fs::read(&goforward)?;
        let audio: Vec<f32> = bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
            .collect();
        questions.push(clip("pocketsphinx goforward.raw", audio));
    }
    let mut recorded: Vec<PathBuf> = ["0870", "0880", "0890", "0920", "0930"]
        .iter()
        .map(|n| {
            pocketsphinx.join(format!(
                "librivox/sense_and_sensibility_01_austen_64kb-{n}.wav"
            ))
        })
        .collect();
    if let Some(dir) = std::env::var_os("HARK_TESTDATA") {
        recorded.push(PathBuf::from(dir).join("jfk.wav"));
    }
    let mut recordings = Vec::new();
    for path in recorded.iter().filter(|p| p.is_file()) {
        let audio = hark_audio::wav::read_wav_16k_mono(path)
            .with_context(|| format!("reading {}", path.display()))?;
        // The first sentence or so: an interruption, not a monologue.
        let audio = audio[..audio.len().min(SAMPLE_RATE as usize * 4)].to_vec();
        recordings.push(clip(&path.display().to_string(), audio));
    }
    // One recorded interruption after every two synthesized ones.
    let synthesized = std::mem::take(&mut interruptions);
    for (i, c) in synthesized.into_iter().enumerate() {
        interruptions.push(c);
        if i % 2 == 1 && !recordings.is_empty() {
            interruptions.push(recordings[(i / 2) % recordings.len()].clone());
        }
    }

    let mut noises = vec![
        clip("synthesized clap", clap()),
        clip("synthesized cough", cough()),
        clip("synthesized typing", typing()),
    ];
    let alsa_noise = Path::new("/usr/share/sounds/alsa/Noise.wav");
    if alsa_noise.is_file() {
        let audio = hark_audio::wav::read_wav_16k_mono(alsa_noise)?;
        let audio = audio[..audio.len().min(SAMPLE_RATE as usize)].to_vec();
        noises.push(clip("alsa-utils Noise.wav", audio));
    }
    // Noises over Hark count as backchannels too: one in four.
    let mut mixed = Vec::new();
    for (i, b) in backchannels.into_iter().enumerate() {
        mixed.push(b);
        if i % 3 == 2 {
            mixed.push(noises[(i / 3) % noises.len()].clone());
        }
    }
    Ok(Material {
        questions,
        requests,
        backchannels: mixed,
        interruptions,
        noises,
    })
}

/// `text` spoken by espeak-ng's `voice`, at 16 kHz.
fn espeak(voice: &str, text: &str) -> anyhow::Result<Clip> {
    let audio = espeak_audio(voice, text)?;
    Ok(clip(&format!("espeak-ng {voice}: {text}"), audio))
}

/// `text` spoken by espeak-ng's `voice`, at 16 kHz, as it comes.
pub fn espeak_audio(voice: &str, text: &str) -> anyhow::Result<Vec<f32>> {
    let wav = std::env::temp_dir().join(format!("hark-bench-espeak-{}.wav", std::process::id()));
    let out = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "165", "-w"])
        .arg(&wav)
        .arg(text)
        .stderr(Stdio::piped())
        .output()
        .context("running espeak-ng (Debian package espeak-ng; scripts/setup installs it)")?;
    if !out.status.success() {
        bail!(
            "espeak-ng -v {voice} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let audio = hark_audio::wav::read_wav_16k_mono(&wav);
    let _ = std::fs::remove_file(&wav);
    audio.with_context(|| format!("espeak-ng -v {voice} gave no readable WAV"))
}

/// A clip at [`PEAK`], with 100 ms of silence on each side.
fn clip(name: &str, audio: Vec<f32>) -> Clip {
    let peak = audio.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    let gain = if peak > 0.0 { PEAK / peak } else { 1.0 };
    let pad = vec![0.0; SAMPLE_RATE as usize / 10];
    let mut padded = pad.clone();
    padded.extend(audio.iter().map(|s| s * gain));
    padded.extend(pad);
    Clip {
        name: name.to_owned(),
        audio: padded,
    }
}

/// White noise from a fixed seed (the same noises every run).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `ms` of noise decaying with time constant `tau_ms`, low-passed by
/// `smooth` (0: white; towards 1: darker).
fn burst(noise: &mut Noise, ms: u64, tau_ms: f32, smooth: f32) -> Vec<f32> {
    let n = (ms * SAMPLE_RATE as u64 / 1000) as usize;
    let mut last = 0.0;
    (0..n)
        .map(|i| {
            let t_ms = i as f32 * 1000.0 / SAMPLE_RATE as f32;
            last = smooth * last + (1.0 - smooth) * noise.next();
            last * (-t_ms / tau_ms).exp()
        })
        .collect()
}

fn clap() -> Vec<f32> {
    let mut noise = Noise(1);
    let mut audio = burst(&mut noise, 15, 3.0, 0.0);
    audio.extend(burst(&mut noise, 120, 25.0, 0.2));
    audio
}

fn cough() -> Vec<f32> {
    let mut noise = Noise(2);
    let mut audio = Vec::new();
    for _ in 0..2 {
        let mut part = burst(&mut noise, 250, 90.0, 0.7);
        // A cough's attack is not instant.
        for (i, s) in part.iter_mut().take(320).enumerate() {
            *s *= i as f32 / 320.0;
        }
        audio.extend(part);
        audio.extend(std::iter::repeat_n(0.0, SAMPLE_RATE as usize / 8));
    }
    audio
}

fn typing() -> Vec<f32> {
    let mut noise = Noise(3);
    let mut audio = Vec::new();
    for k in 0..10 {
        audio.extend(burst(&mut noise, 8, 1.5, 0.0));
        let gap = 90 + (k * 37) % 80;
        audio.extend(std::iter::repeat_n(0.0, gap * SAMPLE_RATE as usize / 1000));
    }
    audio
}

/// Plays into a PulseAudio sink with `pacat`, at real-time pace.
pub struct PacatMouth {
    child: Child,
    stdin: ChildStdin,
}

/// pacat's buffer: what is written is heard about this much later.
const PACAT_LATENCY_MS: u64 = 40;

impl PacatMouth {
    pub fn open(sink: &str) -> anyhow::Result<Self> {
        let mut child = Command::new("pacat")
            .args([
                "--playback",
                &format!("--device={sink}"),
                "--raw",
                "--format=float32le",
                "--rate=16000",
                "--channels=1",
                &format!("--latency-msec={PACAT_LATENCY_MS}"),
                "--client-name=hark-bench-user",
            ])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running pacat (Debian package pulseaudio-utils)")?;
        let stdin = child.stdin.take().expect("piped");
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            bail!("pacat --device={sink} exited ({status}): {}", err.trim());
        }
        Ok(Self { child, stdin })
    }
}

impl Mouth for PacatMouth {
    fn say(&mut self, audio: &[f32]) -> Result<(), BoxError> {
        let started = Instant::now();
        let chunk = SAMPLE_RATE as usize / 50;
        for (k, part) in audio.chunks(chunk).enumerate() {
            let bytes: Vec<u8> = part.iter().flat_map(|s| s.to_le_bytes()).collect();
            self.stdin.write_all(&bytes)?;
            self.stdin.flush()?;
            let due = started + Duration::from_millis(20 * (k as u64 + 1));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(PACAT_LATENCY_MS));
        Ok(())
    }
}

impl Drop for PacatMouth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
