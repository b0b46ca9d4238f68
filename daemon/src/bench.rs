//! `hark bench stt`: speech-to-text speed and idle listening cost, as JSON
//! (`hark bench converse` lives with the conversation, in `converse::bench`).
//!
//! - per file: audio seconds, wall time of `transcribe`, real-time factor;
//! - a 3 s utterance (the first 3 s of the first file) transcribed after a
//!   warm-up run, several times, median reported;
//! - CPU used by the listening pipeline (real-time paced source, VAD, STT
//!   thread) over N seconds of silence, as a percentage of one core.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Subcommand;
use hark_audio::vad::VadConfig;
use hark_audio::wav::{Pacing, WavSource};
use hark_audio::SAMPLE_RATE;
use hark_models::store::ModelStore;
use serde::Serialize;

use crate::ModelArgs;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// A scripted 12-turn conversation (4 interruptions) in real time:
    /// voice-to-voice and barge-in latency, and where the time goes.
    Converse(crate::converse::bench::ConverseBenchArgs),
    /// Whisper speed per file, 3 s utterance latency, idle listening CPU.
    Stt {
        /// WAV files to transcribe (default: the test recordings in
        /// $HARK_TESTDATA and the Debian packages).
        files: Vec<PathBuf>,
        /// Timed runs of the 3 s utterance.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seconds of silence for the idle-listening measurement.
        #[arg(long, default_value_t = 30.0)]
        idle_secs: f64,
        #[command(flatten)]
        model: ModelArgs,
    },
}

#[derive(Serialize)]
struct FileResult {
    file: String,
    audio_secs: f64,
    wall_ms: f64,
    real_time_factor: f64,
    text: String,
}

#[derive(Serialize)]
struct UtteranceResult {
    audio_secs: f64,
    runs: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct IdleResult {
    audio_secs: f64,
    wall_secs: f64,
    cpu_secs: f64,
    cpu_percent_of_one_core: f64,
}

#[derive(Serialize)]
struct SttReport {
    model: String,
    threads: usize,
    cores: usize,
    /// Beam width for whole files (`hark transcribe`).
    file_beam_size: usize,
    /// Beam width for utterances (`hark listen`).
    utterance_beam_size: usize,
    files: Vec<FileResult>,
    total_audio_secs: f64,
    total_wall_ms: f64,
    utterance_3s: UtteranceResult,
    idle_listen: IdleResult,
}

pub fn run(cmd: BenchCommand, store: &ModelStore) -> anyhow::Result<()> {
    let (files, runs, idle_secs, model) = match cmd {
        BenchCommand::Converse(args) => return crate::converse::bench::run(args, store),
        BenchCommand::Stt {
            files,
            runs,
            idle_secs,
            model,
        } => (files, runs, idle_secs, model),
    };
    let files = if files.is_empty() {
        default_files()
    } else {
        files
    };
    if files.is_empty() {
        bail!("no benchmark files given and none of the default test recordings exist; run scripts/setup or pass WAV files");
    }
    let model_path = crate::stt_setup::resolve_model(&model.model, store)?;
    let mut stt = crate::stt_setup::load_whisper(&model, store, false)?;
    use hark_stt::SpeechToText;

    let mut results = Vec::new();
    let mut first_audio = None;
    for file in &files {
        let samples = hark_audio::wav::read_wav_16k_mono(file)?;
        let started = Instant::now();
        let transcript = stt.transcribe(&samples)?;
        let wall = started.elapsed().as_secs_f64();
        let audio_secs = samples.len() as f64 / SAMPLE_RATE as f64;
        eprintln!(
            "hark: bench {}: {audio_secs:.2} s audio in {:.0} ms",
            file.display(),
            wall * 1e3
        );
        results.push(FileResult {
            file: file.display().to_string(),
            audio_secs,
            wall_ms: wall * 1e3,
            real_time_factor: wall / audio_secs.max(1e-9),
            text: transcript.text(),
        });
        first_audio.get_or_insert(samples);
    }

    let three_secs = first_audio
        .map(|s| s[..s.len().min(3 * SAMPLE_RATE as usize)].to_vec())
        .unwrap_or_default();
    // Utterances are what listening transcribes: measure them (and idle
    // listening) with the listening configuration.
    let file_beam_size = stt.config().beam_size;
    drop(stt);
    let mut stt = crate::stt_setup::load_whisper(&model, store, true)?;
    let utterance_beam_size = stt.config().beam_size;
    let threads = stt.config().threads;
    stt.transcribe(&three_secs)?; // warm-up: first-call allocations
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            stt.transcribe(&three_secs)
                .map(|_| started.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    times.sort_by(f64::total_cmp);
    let utterance_3s = UtteranceResult {
        audio_secs: three_secs.len() as f64 / SAMPLE_RATE as f64,
        runs: times.len(),
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        max_ms: times[times.len() - 1],
    };
    eprintln!(
        "hark: bench 3 s utterance: median {:.0} ms",
        utterance_3s.median_ms
    );

    eprintln!("hark: bench idle listening over {idle_secs} s of silence (real-time paced)");
    let idle_listen = idle_cpu(idle_secs, Box::new(stt))?;

    let report = SttReport {
        model: model_path.display().to_string(),
        threads,
        file_beam_size,
        utterance_beam_size,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        total_audio_secs: results.iter().map(|r| r.audio_secs).sum(),
        total_wall_ms: results.iter().map(|r| r.wall_ms).sum(),
        files: results,
        utterance_3s,
        idle_listen,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn default_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(dir) = std::env::var_os("HARK_TESTDATA") {
        files.push(PathBuf::from(dir).join("jfk.wav"));
    }
    let librivox = "/usr/share/pocketsphinx/test/data/librivox";
    for n in ["0870", "0880", "0890", "0920", "0930"] {
        files.push(PathBuf::from(format!(
            "{librivox}/sense_and_sensibility_01_austen_64kb-{n}.wav"
        )));
    }
    files.push(PathBuf::from("/usr/share/sounds/alsa/Front_Center.wav"));
    files.retain(|f| f.is_file());
    files
}

/// Runs the real listening pipeline over `secs` of digital silence paced in
/// real time and measures this process's CPU time meanwhile.
fn idle_cpu(secs: f64, stt: Box<dyn hark_stt::SpeechToText>) -> anyhow::Result<IdleResult> {
    let dir = std::env::temp_dir().join(format!("hark-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("silence.wav");
    let mut sink = hark_audio::wav::WavSink::create(
        &path,
        SAMPLE_RATE,
        hark_audio::wav::WavSampleFormat::Int16,
    )?;
    sink.write(&vec![0.0; (secs * SAMPLE_RATE as f64) as usize])?;
    sink.finalize()?;

    let vad = VadConfig::default();
    let frame_len = (SAMPLE_RATE * vad.frame_ms / 1000) as usize;
    let source = Box::new(WavSource::open(&path, frame_len, Pacing::Realtime)?);
    let cpu_before = process_cpu_secs()?;
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
    let cpu_secs = process_cpu_secs()? - cpu_before;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(IdleResult {
        audio_secs: secs,
        wall_secs,
        cpu_secs,
        cpu_percent_of_one_core: 100.0 * cpu_secs / wall_secs.max(1e-9),
    })
}

/// User + system CPU time of this process, from /proc/self/stat (fields 14
/// and 15, in clock ticks of 1/100 s, Linux's fixed USER_HZ).
fn process_cpu_secs() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
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
    Ok((ticks(11) + ticks(12)) as f64 / 100.0)
}
