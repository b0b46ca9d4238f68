//! `hark bench stt`: speech-to-text speed and the cost of idle listening.
//!
//! - per file: audio seconds, wall time of `transcribe`, real-time factor;
//! - a 3 s utterance (the first 3 s of the first file) transcribed after a
//!   warm-up run, several times, median reported;
//! - CPU used by the listening pipeline (real-time paced source, VAD, STT
//!   thread) over N seconds of silence, as a percentage of one core.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use hark_audio::vad::VadConfig;
use hark_audio::wav::{Pacing, WavSource};
use hark_audio::SAMPLE_RATE;
use hark_stt::SpeechToText;
use serde::Serialize;

use super::BenchError;
use crate::{BoxError, SessionError};

#[derive(Serialize)]
pub struct FileResult {
    pub file: String,
    pub audio_secs: f64,
    pub wall_ms: f64,
    pub real_time_factor: f64,
    pub text: String,
}

#[derive(Serialize)]
pub struct UtteranceResult {
    pub audio_secs: f64,
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

#[derive(Serialize)]
pub struct IdleResult {
    pub audio_secs: f64,
    pub wall_secs: f64,
    pub cpu_secs: f64,
    pub cpu_percent_of_one_core: f64,
}

/// How the benchmark runs, and the names it reports.
pub struct SttOptions {
    pub files: Vec<PathBuf>,
    /// Timed runs of the 3 s utterance.
    pub runs: usize,
    /// Seconds of silence for the idle-listening measurement.
    pub idle_secs: f64,
    pub model: String,
    pub threads: usize,
    pub file_beam_size: usize,
    pub utterance_beam_size: usize,
}

/// What `hark bench stt` prints, as JSON.
#[derive(Serialize)]
pub struct SttReport {
    pub model: String,
    pub threads: usize,
    pub cores: usize,
    /// Beam width for whole files (`hark transcribe`).
    pub file_beam_size: usize,
    /// Beam width for utterances (`hark listen`).
    pub utterance_beam_size: usize,
    pub files: Vec<FileResult>,
    pub total_audio_secs: f64,
    pub total_wall_ms: f64,
    pub utterance_3s: UtteranceResult,
    pub idle_listen: IdleResult,
}

/// Runs the benchmark. `load(utterance_mode)` gives Whisper for whole
/// files (false) or for utterances (true); one is loaded at a time.
pub fn stt(
    options: &SttOptions,
    mut load: impl FnMut(bool) -> Result<Box<dyn SpeechToText>, BoxError>,
) -> Result<SttReport, BenchError> {
    let transcribe_failed =
        |e: hark_stt::SttError| BenchError::Session(SessionError::Input(e.to_string()));
    let mut stt = load(false).map_err(SessionError::Models)?;
    let mut results = Vec::new();
    let mut first_audio = None;
    for file in &options.files {
        let samples = hark_audio::wav::read_wav_16k_mono(file)?;
        let started = Instant::now();
        let transcript = stt.transcribe(&samples).map_err(transcribe_failed)?;
        let wall = started.elapsed().as_secs_f64();
        let audio_secs = samples.len() as f64 / SAMPLE_RATE as f64;
        tracing::info!(file = %file.display(), audio_secs, wall_ms = wall * 1e3, "transcribed");
        results.push(FileResult {
            file: file.display().to_string(),
            audio_secs,
            wall_ms: wall * 1e3,
            real_time_factor: wall / audio_secs.max(1e-9),
            text: transcript.text(),
        });
        first_audio.get_or_insert(samples);
    }
    drop(stt);

    let three_secs = first_audio
        .map(|s| s[..s.len().min(3 * SAMPLE_RATE as usize)].to_vec())
        .unwrap_or_default();
    // Utterances are what listening transcribes: measure them (and idle
    // listening) with the listening configuration.
    let mut stt = load(true).map_err(SessionError::Models)?;
    stt.transcribe(&three_secs).map_err(transcribe_failed)?; // warm-up: first-call allocations
    let mut times = Vec::new();
    for _ in 0..options.runs.max(1) {
        let started = Instant::now();
        stt.transcribe(&three_secs).map_err(transcribe_failed)?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let utterance_3s = UtteranceResult {
        audio_secs: three_secs.len() as f64 / SAMPLE_RATE as f64,
        runs: times.len(),
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        max_ms: times[times.len() - 1],
    };
    tracing::info!(median_ms = utterance_3s.median_ms, "3 s utterance");

    tracing::info!(
        secs = options.idle_secs,
        "idle listening over silence (real-time paced)"
    );
    let idle_listen = idle_cpu(options.idle_secs, stt)?;

    Ok(SttReport {
        model: options.model.clone(),
        threads: options.threads,
        file_beam_size: options.file_beam_size,
        utterance_beam_size: options.utterance_beam_size,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        total_audio_secs: results.iter().map(|r| r.audio_secs).sum(),
        total_wall_ms: results.iter().map(|r| r.wall_ms).sum(),
        files: results,
        utterance_3s,
        idle_listen,
    })
}

/// Runs the real listening pipeline over `secs` of digital silence paced in
/// real time and measures this process's CPU time meanwhile.
fn idle_cpu(secs: f64, stt: Box<dyn SpeechToText>) -> Result<IdleResult, BenchError> {
    let dir = std::env::temp_dir().join(format!("hark-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Dir {
        path: dir.clone(),
        source,
    })?;
    let path = dir.join("silence.wav");
    let mut sink = hark_audio::wav::WavSink::create(
        &path,
        SAMPLE_RATE,
        hark_audio::wav::WavSampleFormat::Int16,
    )?;
    sink.write(&vec![0.0; (secs * SAMPLE_RATE as f64) as usize])?;
    sink.finalize()?;

    let vad = VadConfig::dictation();
    let source = Box::new(WavSource::open(&path, vad.frame_len(), Pacing::Realtime)?);
    let cpu_before = process_cpu_secs();
    let started = Instant::now();
    crate::listen::run_pipeline(
        source,
        vad,
        stt,
        Box::new(|_| {}),
        Arc::new(AtomicBool::new(false)),
        None,
    )?;
    let wall_secs = started.elapsed().as_secs_f64();
    let cpu_secs = process_cpu_secs() - cpu_before;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(IdleResult {
        audio_secs: secs,
        wall_secs,
        cpu_secs,
        cpu_percent_of_one_core: 100.0 * cpu_secs / wall_secs.max(1e-9),
    })
}

/// User + system CPU time of this process, from /proc/self/stat (fields 14
/// and 15, in clock ticks of 1/100 s, Linux's fixed USER_HZ); 0 where it
/// cannot be read.
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string(Path::new("/proc/self/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces; fields after it are
    // counted from the closing parenthesis.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After ')': field 3 is index 0, so utime (14) is 11 and stime (15) is 12.
    (ticks(11) + ticks(12)) as f64 / 100.0
}
