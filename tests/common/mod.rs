//! Shared helpers for Hark's integration tests: where the binary, the
//! models and the recordings are, word error rate, and running `hark`.
#![allow(dead_code)]

pub mod http;
pub mod rig;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn hark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hark"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A model store in `dir` of links to the real one's files, all but
/// `except`, so a test can remove or damage a model without touching the
/// store other tests use.
pub fn linked_store(dir: &Path, except: &[&str]) -> PathBuf {
    let real = hark_models::store::ModelStore::from_env().unwrap();
    let store = dir.join("models");
    std::fs::create_dir(&store).unwrap();
    for entry in std::fs::read_dir(real.root()).unwrap() {
        let name = entry.unwrap().file_name();
        if !except.iter().any(|e| name == *e) {
            std::os::unix::fs::symlink(real.root().join(&name), store.join(&name)).unwrap();
        }
    }
    store
}

/// Where `scripts/setup` puts downloaded recordings (jfk.wav).
pub fn testdata() -> PathBuf {
    std::env::var_os("HARK_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/testdata"))
}

/// A recording the test needs; a missing one fails the test with the fix.
pub fn recording(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    assert!(
        path.is_file(),
        "test recording {} is missing; run scripts/setup (or scripts/test)",
        path.display()
    );
    path.to_path_buf()
}

pub const LIBRIVOX: &str = "/usr/share/pocketsphinx/test/data/librivox";

/// (file, reference text) for the five LibriVox clips and JFK.
pub fn speech_corpus() -> Vec<(PathBuf, String)> {
    let transcription = std::fs::read_to_string(recording(format!("{LIBRIVOX}/transcription")))
        .expect("read librivox/transcription");
    let mut corpus: Vec<(PathBuf, String)> = transcription
        .lines()
        .filter_map(|line| {
            // "<s> words </s> (file-id)"
            let (text, id) = line.rsplit_once('(')?;
            let id = id.trim_end_matches(')').trim();
            let text = text.replace("<s>", "").replace("</s>", "");
            Some((
                recording(format!("{LIBRIVOX}/{id}.wav")),
                text.trim().to_string(),
            ))
        })
        .collect();
    assert_eq!(corpus.len(), 5, "expected five LibriVox clips");
    corpus.push((
        recording(testdata().join("jfk.wav")),
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.".into(),
    ));
    corpus
}

/// Lower-case words without punctuation; spelled-out honorifics so that
/// "Mr." and "mister" compare equal.
pub fn normalize(text: &str) -> Vec<String> {
    let cleaned: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect();
    cleaned
        .split_whitespace()
        .map(|w| match w {
            "mr" => "mister".to_string(),
            "mrs" => "missus".to_string(),
            w => w.to_string(),
        })
        .collect()
}

/// Word-level edit distance between reference and hypothesis.
pub fn word_errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut cur = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            let substitution = prev[j] + usize::from(r != h);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[hypothesis.len()]
}

/// Total WER of (reference, hypothesis) pairs: errors over reference
/// words, all pairs together.
pub fn total_wer(pairs: &[(String, String)]) -> f64 {
    let (mut errors, mut words) = (0, 0);
    for (reference, hypothesis) in pairs {
        let r = normalize(reference);
        errors += word_errors(&r, &normalize(hypothesis));
        words += r.len();
    }
    errors as f64 / words as f64
}

pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = normalize(reference);
    word_errors(&r, &normalize(hypothesis)) as f64 / r.len().max(1) as f64
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run hark");
    eprintln!(
        "$ {:?}\n--- stdout\n{}--- stderr\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A 16 kHz mono 16-bit WAV, written by hand so the test does not trust the
/// code under test to write it.
pub fn write_wav(path: &std::path::Path, samples: &[i16]) {
    write_wav_at(path, 16000, samples)
}

/// A mono 16-bit WAV at `rate` Hz, written by hand.
pub fn write_wav_at(path: &std::path::Path, rate: u32, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn wer_counts_substitutions_insertions_deletions() {
    assert_eq!(wer("a b c d", "a b c d"), 0.0);
    assert_eq!(wer("a b c d", "a x c d"), 0.25);
    assert_eq!(wer("a b c d", "a b c"), 0.25);
    assert_eq!(wer("a b c d", "a b b c d"), 0.25);
    assert_eq!(
        wer("Mister Smith, ill-disposed.", "mr smith ill disposed"),
        0.0
    );
}

/// Synthesizes `text` with Hark's voice into `dir/name.wav`.
pub fn spoken(dir: &Path, name: &str, text: &str) -> PathBuf {
    let wav = dir.join(format!("{name}.wav"));
    let out = run(hark().args(["say", "--output"]).arg(&wav).arg(text));
    assert!(out.status.success(), "{}", stderr(&out));
    wav
}

/// Writes `wav` with `before` and `after` seconds of silence around it.
pub fn pad_with_silence(wav: &Path, out: &Path, before: f64, after: f64) {
    let mut reader = hound::WavReader::open(wav).unwrap();
    let spec = reader.spec();
    let rate = spec.sample_rate as f64;
    let body: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let mut writer = hound::WavWriter::create(out, spec).unwrap();
    for _ in 0..(before * rate) as usize {
        writer.write_sample(0i16).unwrap();
    }
    for s in body {
        writer.write_sample(s).unwrap();
    }
    for _ in 0..(after * rate) as usize {
        writer.write_sample(0i16).unwrap();
    }
    writer.finalize().unwrap();
}

/// The event log `hark converse --events` wrote, one JSON value per line.
pub fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The events called `name`.
pub fn named<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Every reply that finished, per the event log: (what was spoken,
/// interrupted).
pub fn replies(log: &[serde_json::Value]) -> Vec<(String, bool)> {
    named(log, "turn_finished")
        .iter()
        .map(|e| {
            (
                e["text"].as_str().unwrap_or_default().to_owned(),
                e["interrupted"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// `hark converse` from `input` to `dir/hark.wav`, logging to
/// `dir/events.jsonl`, with `args` and no user configuration; the events.
pub fn converse_files(dir: &Path, input: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let log = dir.join("events.jsonl");
    let _ = std::fs::remove_file(&log);
    let out = run(hark()
        .env("XDG_CONFIG_HOME", dir)
        .arg("converse")
        .arg("-i")
        .arg(input)
        .arg("-o")
        .arg(dir.join("hark.wav"))
        .arg("--events")
        .arg(&log)
        .args(args));
    assert!(out.status.success(), "{}", stderr(&out));
    events(&log)
}

/// Concatenates WAVs (same format) with `gap` seconds of silence between
/// them and `tail` seconds after.
pub fn sequence(dir: &Path, parts: &[&Path], gap: f64, tail: f64) -> PathBuf {
    let out = dir.join("input.wav");
    let spec = hound::WavReader::open(parts[0]).unwrap().spec();
    let rate = spec.sample_rate as f64;
    let mut writer = hound::WavWriter::create(&out, spec).unwrap();
    for _ in 0..(0.5 * rate) as usize {
        writer.write_sample(0i16).unwrap();
    }
    for (i, part) in parts.iter().enumerate() {
        for s in hound::WavReader::open(part).unwrap().samples::<i16>() {
            writer.write_sample(s.unwrap()).unwrap();
        }
        let pause = if i + 1 == parts.len() { tail } else { gap };
        for _ in 0..(pause * rate) as usize {
            writer.write_sample(0i16).unwrap();
        }
    }
    writer.finalize().unwrap();
    out
}
