//! `hark bench`: measurements as JSON on stdout. The scenarios live in
//! `hark_session::bench`; this module turns flags and the configuration
//! into them.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use hark_models::store::ModelStore;
use hark_session::bench::quality::QualityOptions;
use hark_session::bench::soak::SoakOptions;
use hark_session::bench::stt::SttOptions;
use hark_session::bench::{self, ConverseOptions};
use hark_stt::SttConfig;

use hark_session::SessionSetup;

use crate::args::{SessionArgs, WhisperArgs};
use crate::config::HarkConfig;
use crate::Globals;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// A scripted 16-turn conversation in real time (4 interruptions, 4
    /// sentences with a pause in the middle): voice-to-voice and barge-in
    /// latency, sentences cut off, Smart Turn's cost, replies prepared and
    /// dropped, and where the time goes. Hark runs as the configuration
    /// (and the flags) say: compare the end-of-turn rules with
    /// `--set turn.detector=silence`.
    Converse(ConverseBenchArgs),
    /// Hours of audio through the whole pipeline, faster than real time:
    /// the conversation script with recordings of other voices and of
    /// noise woven in, over and over, while the process's memory,
    /// descriptors and threads are read every half second. Prints turns,
    /// errors, panics, growth after warm-up, Whisper runs and CPU time per
    /// second of audio as JSON. Hark listens in the configured mode.
    Soak(SoakArgs),
    /// How well Hark holds a conversation, through the real microphone and
    /// speaker of an audio server where the speaker leaks into the
    /// microphone (run it with scripts/bench-quality, which starts such a
    /// server): replies cut by Hark's own voice, backchannels and noises
    /// that stop it, interrupting sentences it talks through, and anything
    /// heard or said during minutes of noise. The user's side is played
    /// into a PulseAudio sink with pacat, in voices that are not Hark's.
    /// Takes about 25 minutes with the defaults.
    Quality(QualityArgs),
    /// How well `[wake] addressee = "likely"` tells speech meant for Hark
    /// from speech that is not: precision and recall on a labelled set
    /// (the repository's tests/addressee/set.tsv), each utterance
    /// transcribed by Whisper first.
    Addressee {
        /// The labelled set: lines of LABEL<TAB>SOURCE<TAB>WHAT.
        set: PathBuf,
        /// espeak-ng voices for the set's spoken lines, taken in turn
        /// (default: the five tiny.en transcribes best).
        #[arg(long, value_delimiter = ',', value_name = "VOICE,...")]
        voices: Vec<String>,
        #[command(flatten)]
        whisper: WhisperArgs,
    },
    /// Whisper speed per file, 3 s utterance latency, idle listening CPU,
    /// for the configured Whisper model (stt.model, stt.threads).
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
        /// Beam widths are 5 for files and 3 for utterances, as `hark
        /// transcribe` and `hark listen` use, unless --beam-size is given.
        #[command(flatten)]
        whisper: WhisperArgs,
    },
}

#[derive(Args, Debug)]
pub struct ConverseBenchArgs {
    /// Keep the scenario's input, Hark's output and the event log here.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,

    /// How far into Hark's reply each interruption starts, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interrupt_after_ms: u64,

    /// Which script: "conversation" (16 open questions, 4 interruptions, 4
    /// mid-sentence pauses: the model's path) or "skills" (8 requests the skills answer: the
    /// intent layer's path).
    #[arg(long, value_name = "NAME", default_value = "conversation", value_parser = ["conversation", "skills"])]
    pub script: String,

    /// Play only the first N lines of the script (a quick check).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=bench::MAX_LINES as u64))]
    pub turns: Option<u64>,

    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Hours of audio to play through.
    #[arg(long, value_name = "H", default_value_t = 1.0, value_parser = positive)]
    pub hours: f64,

    /// How many times faster than real time (the script, Hark's output
    /// and the session's clock; inference keeps its real speed).
    #[arg(long, value_name = "X", default_value_t = 4.0, value_parser = positive)]
    pub speed: f64,

    /// Recordings of other voices and noise to weave into the script
    /// (default: the test recordings in $HARK_TESTDATA and the Debian
    /// packages, and the ALSA noise sample).
    pub recordings: Vec<PathBuf>,

    /// How far into Hark's reply each interruption starts, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interrupt_after_ms: u64,

    /// Play only the recordings (nobody speaks to Hark): what listening
    /// costs. Compare modes with `--set daemon.mode=name` or `=wake`.
    #[arg(long)]
    pub no_questions: bool,

    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Args, Debug)]
pub struct QualityArgs {
    /// Questions answered with the user silent (self-interruptions).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub questions: usize,

    /// Backchannels and noises played over Hark (false barge-ins).
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub backchannels: usize,

    /// Whole sentences played over Hark (missed interruptions).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub interruptions: usize,

    /// Seconds of noise and silence with Hark idle.
    #[arg(long, value_name = "SECS", default_value_t = 600.0, value_parser = positive_secs)]
    pub noise_secs: f64,

    /// Write the session's events here, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// Keep every core busy beside Hark (one spinning thread per core, at
    /// Hark's own priority) once the models are loaded: Hark must still
    /// lose no microphone audio (`capture_samples_lost`) and keep its
    /// barge-in timing
    #[arg(long)]
    pub cpu_hog: bool,

    /// The PulseAudio sink whose sound the microphone hears (the audio
    /// rig's `micfeed`).
    #[arg(long, value_name = "SINK", default_value = "micfeed")]
    pub user_sink: String,

    #[command(flatten)]
    pub session: SessionArgs,
}

fn positive_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 36_000.0 => Ok(x),
        _ => Err(format!(
            "{text:?} is not a number of seconds above 0 (and at most 36000)"
        )),
    }
}

fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 1000.0 => Ok(x),
        _ => Err(format!(
            "{text:?} is not a number above 0 (and at most 1000)"
        )),
    }
}

pub fn run(cmd: BenchCommand, globals: &Globals) -> anyhow::Result<()> {
    let store = globals.store()?;
    let json = match cmd {
        BenchCommand::Converse(args) => converse(args, globals, &store)?,
        BenchCommand::Soak(args) => soak(args, globals, &store)?,
        BenchCommand::Quality(args) => quality(args, globals, &store)?,
        BenchCommand::Addressee {
            set,
            voices,
            whisper,
        } => {
            let config = globals.config(&whisper.to_overrides())?;
            let voices = if voices.is_empty() {
                let clear = crate::bench_addressee::CLEAR_VOICES.iter();
                clear.map(|v| v.to_string()).collect()
            } else {
                voices
            };
            let mut stt = crate::models::whisper(&config.stt, &store)?;
            let report = crate::bench_addressee::run(&set, &voices, &config.wake, &mut stt)?;
            serde_json::to_string_pretty(&report)?
        }
        BenchCommand::Stt {
            files,
            runs,
            idle_secs,
            whisper,
        } => stt(files, runs, idle_secs, whisper, globals, &store)?,
    };
    println!("{json}");
    Ok(())
}

fn converse(
    args: ConverseBenchArgs,
    globals: &Globals,
    store: &ModelStore,
) -> anyhow::Result<String> {
    let config = globals.config(&args.session.overrides())?;
    let options = ConverseOptions {
        script: if args.script == "skills" {
            bench::Script::Skills
        } else {
            bench::Script::Conversation
        },
        keep: args.keep,
        interrupt_after_ms: args.interrupt_after_ms,
        turns: args.turns.map(|n| n as usize),
        whisper_model: config.stt.model.clone(),
        llm: config.llm.model.clone(),
    };
    // The user's side is spoken by the same voice.
    let mut user_voice = crate::models::piper(&config.voice, store)?;
    eprintln!(
        "hark bench: running the conversation in real time (about three minutes for 16 turns)"
    );
    let report = bench::converse(
        config.session(),
        &mut user_voice,
        || Ok(crate::models::session(&config, store)?),
        &options,
        skills_and_tools(&config),
    )?;
    Ok(serde_json::to_string_pretty(&report)?)
}

/// The skills (their timers kept in no state file) and the user's tools,
/// as the daemon has them.
fn skills_and_tools(config: &HarkConfig) -> impl FnOnce(&mut SessionSetup) + '_ {
    |setup| {
        setup.skills = Some(config.skills(None));
        setup.tools = config.tools.clone();
    }
}

fn soak(args: SoakArgs, globals: &Globals, store: &ModelStore) -> anyhow::Result<String> {
    let config = globals.config(&args.session.overrides())?;
    let recordings = if args.recordings.is_empty() {
        let mut files = default_files();
        files.push(PathBuf::from("/usr/share/sounds/alsa/Noise.wav"));
        files.retain(|f| f.is_file());
        files
    } else {
        args.recordings
    };
    let options = SoakOptions {
        hours: args.hours,
        speed: args.speed,
        recordings,
        interrupt_after_ms: args.interrupt_after_ms,
        questions: !args.no_questions,
    };
    let mut user_voice = crate::models::piper(&config.voice, store)?;
    eprintln!(
        "hark bench: soaking {} h of audio at {}x (about {:.0} min)",
        args.hours,
        args.speed,
        args.hours * 60.0 / args.speed
    );
    let report = bench::soak::soak(
        config.session(),
        &mut user_voice,
        || Ok(crate::models::session(&config, store)?),
        &options,
        skills_and_tools(&config),
    )?;
    Ok(serde_json::to_string_pretty(&report)?)
}

fn quality(args: QualityArgs, globals: &Globals, store: &ModelStore) -> anyhow::Result<String> {
    let config = globals.config(&args.session.overrides())?;
    let material = crate::bench_quality::material()?;
    let mouth = crate::bench_quality::PacatMouth::open(&args.user_sink)?;
    let options = QualityOptions {
        questions: args.questions,
        backchannels: args.backchannels,
        interruptions: args.interruptions,
        noise_secs: args.noise_secs,
        events: args.events,
        cpu_hog_threads: if args.cpu_hog {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            0
        },
    };
    eprintln!(
        "hark bench: {} questions, {} backchannels and noises, {} interruptions, then {:.0} s of noise, in real time{}",
        options.questions,
        options.backchannels,
        options.interruptions,
        options.noise_secs,
        match options.cpu_hog_threads {
            0 => String::new(),
            n => format!(", beside {n} busy threads"),
        }
    );
    let report = bench::quality::quality(
        config.session(),
        || Ok(crate::models::session(&config, store)?),
        Box::new(mouth),
        material,
        &options,
        skills_and_tools(&config),
    )?;
    Ok(serde_json::to_string_pretty(&report)?)
}

fn stt(
    files: Vec<PathBuf>,
    runs: usize,
    idle_secs: f64,
    whisper: WhisperArgs,
    globals: &Globals,
    store: &ModelStore,
) -> anyhow::Result<String> {
    let files = if files.is_empty() {
        default_files()
    } else {
        files
    };
    if files.is_empty() {
        anyhow::bail!("no benchmark files given and none of the default test recordings exist; run scripts/setup or pass WAV files");
    }
    let configured = globals.config(&whisper.to_overrides())?.stt;
    let with_mode = |mode: SttConfig| SttConfig {
        beam_size: whisper.beam_size.unwrap_or(mode.beam_size),
        shrink_audio_ctx: mode.shrink_audio_ctx,
        ..configured.clone()
    };
    let file_config = with_mode(SttConfig::files());
    let utterance_config = with_mode(SttConfig::listening());
    let options = SttOptions {
        files,
        runs,
        idle_secs,
        model: crate::models::whisper_file(&file_config.model, store)?
            .display()
            .to_string(),
        threads: utterance_config.thread_count(),
        file_beam_size: file_config.beam_size,
        utterance_beam_size: utterance_config.beam_size,
    };
    let report = bench::stt::stt(&options, |utterance_mode| {
        let config = if utterance_mode {
            &utterance_config
        } else {
            &file_config
        };
        Ok(Box::new(crate::models::whisper(config, store)?))
    })?;
    Ok(serde_json::to_string_pretty(&report)?)
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
