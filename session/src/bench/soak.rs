//! `hark bench soak`: hours of audio through the whole pipeline, faster
//! than real time, watching the process for leaks.
//!
//! The input is the conversation benchmark's script (questions, four
//! interruptions, four mid-sentence pauses, in the Piper voice) with
//! recordings of other voices and of noise woven in, played again and
//! again until `hours` of audio have gone through. Questions wait for Hark
//! to answer and fall quiet; a recording Hark does not answer (noise) is
//! followed by the script's 20 s of patience, so silence is played too.
//! Everything paced runs on a [`ScaledClock`] `speed` times faster than
//! the machine's: the script, the clocked output file and the core's
//! timeline. Inference keeps its real speed, so it looks slower on the
//! faster clock; the pipeline's logic is the same.
//!
//! With `questions` off only the recordings play (with the silences after
//! them): nobody speaks to Hark, which is what its listening costs. Hark
//! listens in the configured mode, so `always`, `name` and `wake` can be
//! compared on the same audio by the CPU time the process used per second
//! of audio and the Whisper runs it made.
//!
//! A sampler thread reads the process's resident memory, open file
//! descriptors and threads from `/proc/self` every half second. Growth is
//! measured after a warm-up (the first tenth of the audio): the median
//! resident memory of the last tenth against that of the second tenth,
//! and the fewest descriptors and threads of each (a reply's forwarding
//! thread comes and goes; one that stays is a leak).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hark_audio::{AudioError, Frame, FrameSource, SAMPLE_RATE};
use hark_tts::Voice;
use serde::Serialize;

use super::{audible_span, BenchError, Kind, Line, ScriptSource, Watch, SCRIPT};
use crate::clock::{Clock, ScaledClock};
use crate::events::SessionEvent;
use crate::{run_session, BoxError, Input, Models, Output, SessionConfig, SessionSetup};

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Hours of audio to play through.
    pub hours: f64,
    /// How much faster than real time the paced parts run.
    pub speed: f64,
    /// Recordings of other voices and of noise, woven into the script.
    pub recordings: Vec<PathBuf>,
    /// How far into Hark's reply each interruption starts, in ms.
    pub interrupt_after_ms: u64,
    /// Play the script's questions and interruptions (else only the
    /// recordings).
    pub questions: bool,
}

/// One reading of the process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcessSample {
    /// Audio played so far, in seconds.
    pub audio_secs: f64,
    pub rss_kb: u64,
    pub fds: u64,
    pub threads: u64,
}

/// What `hark bench soak` prints, as JSON.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub cores: usize,
    /// The listening mode (`[daemon] mode`).
    pub mode: String,
    pub speed: f64,
    pub audio_hours: f64,
    pub wall_secs: f64,
    /// Script lines played (questions, interruptions, recordings, noise).
    pub lines_played: u64,
    /// Replies Hark finished.
    pub turns: usize,
    pub interruptions: usize,
    /// `Error` events.
    pub errors: usize,
    /// Of those, the engines' panics caught by the guard.
    pub panics: usize,
    /// The first few errors' messages.
    pub first_errors: Vec<String>,
    /// Whisper runs (final, speculative and partial transcripts).
    pub whisper_runs: usize,
    /// Utterances heard and judged not meant for Hark.
    pub not_addressed: usize,
    /// CPU time (user + system) the process used from the models' loading
    /// to the end.
    pub cpu_secs: f64,
    /// `cpu_secs` per second of audio, in percent of one core: what
    /// listening (and answering) costs at real time.
    pub cpu_percent_of_one_core: f64,
    pub rss_start_kb: u64,
    /// Median over the second tenth of the audio (after warm-up).
    pub rss_warm_kb: u64,
    /// Median over the last tenth.
    pub rss_end_kb: u64,
    /// The process's high-water mark.
    pub rss_peak_kb: u64,
    /// `rss_end_kb` against `rss_warm_kb`.
    pub rss_growth_percent: f64,
    pub fds_start: u64,
    /// Fewest in the last tenth minus fewest in the second tenth.
    pub fd_growth: i64,
    pub threads_start: u64,
    /// Fewest in the last tenth minus fewest in the second tenth.
    pub thread_growth: i64,
    /// A reading every twentieth of the run, for a plot.
    pub series: Vec<ProcessSample>,
}

/// A recording woven into the script, or why it could not be.
fn recorded(path: &PathBuf) -> Result<Line, BenchError> {
    let audio = hark_audio::wav::read_wav_16k_mono(path)?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    Ok(Line {
        text: format!("(recording {name})"),
        kind: Kind::Question,
        speech: audible_span(&audio),
        audio,
        pause: None,
    })
}

/// The script's lines with a recording after every fourth, in turn (any
/// left over at the end).
fn weave(script: Vec<Line>, recordings: Vec<Line>) -> Vec<Arc<Line>> {
    let mut extra = recordings.into_iter().map(Arc::new);
    let mut lines = Vec::new();
    for (i, line) in script.into_iter().enumerate() {
        lines.push(Arc::new(line));
        if i % 4 == 3 {
            lines.extend(extra.next());
        }
    }
    lines.extend(extra);
    lines
}

/// Reads `/proc/self`: resident memory and its high-water mark (kB),
/// open descriptors, threads.
fn read_process() -> (u64, u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    (field("VmRSS:"), field("VmHWM:"), fds, field("Threads:"))
}

/// CPU time (user + system, seconds) this process has used so far, from
/// `/proc/self/stat` (in USER_HZ ticks, 100 a second on Linux).
fn cpu_secs() -> f64 {
    const TICKS_PER_SEC: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces), from state.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS_PER_SEC
}

/// The script source, counting what it has played for the sampler.
struct Counted {
    inner: ScriptSource,
    played: Arc<AtomicU64>,
}

impl FrameSource for Counted {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        let frame = self.inner.next_frame()?;
        if let Some(frame) = &frame {
            self.played.store(frame.end_sample(), Ordering::Relaxed);
        }
        Ok(frame)
    }
    fn frame_len(&self) -> usize {
        self.inner.frame_len()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn hears_local_playback(&self) -> bool {
        false
    }
}

/// What the sampler and the event counter gather while the soak runs.
#[derive(Default)]
struct Gathered {
    samples: Vec<ProcessSample>,
    errors: usize,
    panics: usize,
    first_errors: Vec<String>,
    whisper_runs: usize,
    not_addressed: usize,
    /// CPU seconds used when the models were loaded.
    cpu_at_ready: f64,
}

/// How many error messages the report quotes.
const QUOTED_ERRORS: usize = 10;

/// The soak: Hark as `config` and `load` make it, the user's side spoken
/// by `user_voice` plus `options.recordings`, for `options.hours` of audio.
pub fn soak(
    config: SessionConfig,
    user_voice: &mut dyn Voice,
    load: impl FnOnce() -> Result<Models, BoxError>,
    options: &SoakOptions,
    prepare: impl FnOnce(&mut SessionSetup),
) -> Result<SoakReport, BenchError> {
    let mode = format!("{:?}", config.mode).to_lowercase();
    let mut script = Vec::new();
    if options.questions {
        tracing::info!("synthesizing the user's side");
        for say in SCRIPT {
            script.push(Line::speak(say, user_voice)?);
        }
    } else if options.recordings.is_empty() {
        return Err(BenchError::Invalid(
            "without the questions there is nothing to play: give recordings".into(),
        ));
    }
    let recordings = options
        .recordings
        .iter()
        .map(recorded)
        .collect::<Result<Vec<_>, _>>()?;
    let lines = weave(script, recordings);
    let total = (options.hours * 3600.0 * SAMPLE_RATE as f64) as u64;

    let clock: Arc<dyn Clock> = Arc::new(ScaledClock::new(options.speed));
    let played = Arc::new(AtomicU64::new(0));
    let watch = Arc::new(Watch::default());
    watch.lock().forget_samples = true;
    let starts = Arc::new(Mutex::new(Vec::new()));
    let mut script = ScriptSource::new(
        lines,
        watch.clone(),
        config.vad.frame_len(),
        clock.clone(),
        starts.clone(),
        options.interrupt_after_ms,
    );
    script.repeat_until = Some(total);
    let source = Counted {
        inner: script,
        played: played.clone(),
    };
    let gathered = Arc::new(Mutex::new(Gathered::default()));
    let mut setup = SessionSetup::new(
        config,
        Input::Source(Box::new(source)),
        Output::File {
            // Hours of Hark's voice are written, and thrown away.
            path: PathBuf::from("/dev/null"),
            tap: Some(watch),
        },
    );
    setup.clock = clock;
    let seen = gathered.clone();
    setup
        .subscribers
        .push(Box::new(move |_: u64, event: &SessionEvent| {
            let mut g = seen.lock().unwrap_or_else(|p| p.into_inner());
            match event {
                SessionEvent::Transcript { .. }
                | SessionEvent::SpeculativeTranscript { .. }
                | SessionEvent::PartialTranscript { .. } => g.whisper_runs += 1,
                SessionEvent::NotAddressed { .. } => g.not_addressed += 1,
                _ => {}
            }
            if let SessionEvent::Error { code, message } = event {
                g.errors += 1;
                if message.contains("panicked") {
                    g.panics += 1;
                }
                if g.first_errors.len() < QUOTED_ERRORS {
                    g.first_errors.push(format!("{code}: {message}"));
                }
            }
        }));
    // The sampler starts once the models are loaded and everything runs.
    let running = Arc::new(AtomicBool::new(true));
    let sampler: Arc<Mutex<Option<std::thread::JoinHandle<()>>>> = Arc::default();
    let (keep_running, into, handle) = (running.clone(), gathered.clone(), sampler.clone());
    setup.on_ready = Some(Box::new(move |_| {
        into.lock().unwrap_or_else(|p| p.into_inner()).cpu_at_ready = cpu_secs();
        let thread = std::thread::Builder::new()
            .name("hark-soak-sampler".into())
            .spawn(move || {
                while keep_running.load(Ordering::Relaxed) {
                    let (rss_kb, _, fds, threads) = read_process();
                    let audio_secs = played.load(Ordering::Relaxed) as f64 / f64::from(SAMPLE_RATE);
                    into.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .samples
                        .push(ProcessSample {
                            audio_secs,
                            rss_kb,
                            fds,
                            threads,
                        });
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
        *handle.lock().unwrap_or_else(|p| p.into_inner()) = thread.ok();
    }));
    prepare(&mut setup);
    tracing::info!(
        hours = options.hours,
        speed = options.speed,
        "soaking: about {:.0} min of wall time",
        options.hours * 60.0 / options.speed
    );
    let started = Instant::now();
    let outcome = run_session(setup, load)?;
    let wall_secs = started.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    if let Some(thread) = sampler.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = thread.join();
    }
    let (_, rss_peak_kb, _, _) = read_process();
    let cpu_secs = cpu_secs();
    let gathered = std::mem::take(&mut *gathered.lock().unwrap_or_else(|p| p.into_inner()));
    let lines_played = starts.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
    Ok(report(
        gathered,
        mode,
        cpu_secs,
        options,
        total,
        wall_secs,
        rss_peak_kb,
        lines_played,
        outcome.turns.len(),
        outcome.interruptions,
    ))
}

#[allow(clippy::too_many_arguments)] // the report's parts, each named
fn report(
    gathered: Gathered,
    mode: String,
    cpu_secs_at_end: f64,
    options: &SoakOptions,
    total_samples: u64,
    wall_secs: f64,
    rss_peak_kb: u64,
    lines_played: u64,
    turns: usize,
    interruptions: usize,
) -> SoakReport {
    let samples = &gathered.samples;
    let total_secs = total_samples as f64 / f64::from(SAMPLE_RATE);
    // The readings taken while the audio was between two fractions of it.
    let window = |from: f64, to: f64| -> Vec<ProcessSample> {
        let picked: Vec<ProcessSample> = samples
            .iter()
            .filter(|s| s.audio_secs >= from * total_secs && s.audio_secs <= to * total_secs)
            .copied()
            .collect();
        if picked.is_empty() {
            // A run too short for the window: the nearest reading.
            samples.last().into_iter().copied().collect()
        } else {
            picked
        }
    };
    let median = |w: &[ProcessSample]| {
        let mut rss: Vec<u64> = w.iter().map(|s| s.rss_kb).collect();
        rss.sort_unstable();
        rss.get(rss.len() / 2).copied().unwrap_or(0)
    };
    let fewest = |w: &[ProcessSample], f: fn(&ProcessSample) -> u64| {
        w.iter().map(f).min().unwrap_or(0) as i64
    };
    let (warm, end) = (window(0.1, 0.2), window(0.9, 1.0));
    let first = samples.first().copied();
    let (rss_warm_kb, rss_end_kb) = (median(&warm), median(&end));
    let step = (samples.len() / 20).max(1);
    let audio_secs = samples.last().map_or(0.0, |s| s.audio_secs);
    let cpu_secs = (cpu_secs_at_end - gathered.cpu_at_ready).max(0.0);
    SoakReport {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mode,
        whisper_runs: gathered.whisper_runs,
        not_addressed: gathered.not_addressed,
        cpu_secs,
        cpu_percent_of_one_core: if audio_secs > 0.0 {
            cpu_secs * 100.0 / audio_secs
        } else {
            0.0
        },
        speed: options.speed,
        audio_hours: audio_secs / 3600.0,
        wall_secs,
        lines_played,
        turns,
        interruptions,
        errors: gathered.errors,
        panics: gathered.panics,
        first_errors: gathered.first_errors,
        rss_start_kb: first.map_or(0, |s| s.rss_kb),
        rss_warm_kb,
        rss_end_kb,
        rss_peak_kb,
        rss_growth_percent: if rss_warm_kb == 0 {
            0.0
        } else {
            (rss_end_kb as f64 - rss_warm_kb as f64) * 100.0 / rss_warm_kb as f64
        },
        fds_start: first.map_or(0, |s| s.fds),
        fd_growth: fewest(&end, |s| s.fds) - fewest(&warm, |s| s.fds),
        threads_start: first.map_or(0, |s| s.threads),
        thread_growth: fewest(&end, |s| s.threads) - fewest(&warm, |s| s.threads),
        series: samples.iter().step_by(step).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(audio_secs: f64, rss_kb: u64, fds: u64, threads: u64) -> ProcessSample {
        ProcessSample {
            audio_secs,
            rss_kb,
            fds,
            threads,
        }
    }

    #[test]
    fn growth_is_measured_after_the_warm_up_from_medians_and_minima() {
        let options = SoakOptions {
            hours: 100.0 / 3600.0,
            speed: 4.0,
            recordings: Vec::new(),
            interrupt_after_ms: 1000,
            questions: true,
        };
        let mut gathered = Gathered::default();
        // Warm-up grows freely; then flat at 1000 kB with a spike, and a
        // thread that comes and goes; one descriptor stays open at the end.
        for t in 0..=100 {
            let rss = if t < 10 { 500 + t * 50 } else { 1000 };
            let rss = if t == 95 { 5000 } else { rss };
            let threads = if t % 7 == 0 { 12 } else { 11 };
            let fds = if t >= 90 { 21 } else { 20 };
            gathered.samples.push(sample(t as f64, rss, fds, threads));
        }
        gathered.cpu_at_ready = 10.0;
        let report = report(
            gathered,
            "always".into(),
            60.0,
            &options,
            100 * 16_000,
            25.0,
            6000,
            40,
            30,
            4,
        );
        assert_eq!(report.cpu_secs, 50.0);
        assert_eq!(report.cpu_percent_of_one_core, 50.0);
        assert_eq!(report.rss_start_kb, 500);
        assert_eq!((report.rss_warm_kb, report.rss_end_kb), (1000, 1000));
        assert_eq!(report.rss_growth_percent, 0.0);
        assert_eq!(report.thread_growth, 0);
        assert_eq!(report.fd_growth, 1);
        assert_eq!(report.series.len(), 21);
    }

    #[test]
    fn the_process_can_be_read() {
        let (rss, peak, fds, threads) = read_process();
        assert!(rss > 0 && peak >= rss && fds >= 3 && threads >= 1);
        let before = cpu_secs();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        assert!(cpu_secs() > before, "{x}");
    }
}
