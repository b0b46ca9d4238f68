//! `hark bench addressee SET`: how well `[wake] addressee = "likely"`
//! tells speech meant for Hark from speech that is not, on a labelled set
//! of utterances in voices that are not Hark's (`tests/addressee/set.tsv`).
//!
//! Each line of the set is `LABEL<TAB>SOURCE<TAB>WHAT`: the label
//! `directed` or `undirected`; the source `say` (WHAT is spoken by
//! espeak-ng, the voices of `--voices` taken in turn), `wav` (a recording) or `raw` (16
//! kHz 16-bit mono samples, as pocketsphinx ships them). A path may begin
//! with `$HARK_TESTDATA/`. Blank lines and `#` comments are skipped.
//!
//! Every utterance is transcribed by the configured Whisper, as the
//! daemon hears it, and judged cold: not after a reply, with no recent
//! speech of the user's to compare its loudness with, so only the words
//! decide. Precision and recall count "for Hark" as the positive class.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hark_converse::addressee::{judge, Cues, Reason};
use hark_converse::WakeConfig;
use hark_stt::SpeechToText;
use serde::Serialize;

use crate::bench_quality::espeak_audio;

/// The espeak-ng voices tiny.en transcribes best of those measured (en-us,
/// en-gb, en-gb-x-rp, en-us+f3, en-us+m3, en-us+m7; en-gb-scotland and
/// en-029 lose about a third of a request's words to tiny.en, which
/// measures the transcriber rather than the judge).
pub const CLEAR_VOICES: &[&str] = &["en-us", "en-gb-x-rp", "en-us+m3", "en-us+m7", "en-us+f3"];

/// Where one utterance's audio comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Say { voice: String, text: String },
    Wav(PathBuf),
    Raw(PathBuf),
}

/// One labelled utterance.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    directed: bool,
    source: Source,
}

/// Reads the set, naming the line of anything it cannot use.
fn read_set(path: &Path, voices: &[String]) -> anyhow::Result<Vec<Item>> {
    if voices.is_empty() {
        bail!("no espeak-ng voices to speak the set with");
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the labelled set {}", path.display()))?;
    let testdata = std::env::var("HARK_TESTDATA").ok();
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let mut fields = line.splitn(3, '\t');
        let (Some(label), Some(kind), Some(what)) = (fields.next(), fields.next(), fields.next())
        else {
            bail!("{}: expected LABEL<TAB>SOURCE<TAB>WHAT", at());
        };
        let directed = match label {
            "directed" => true,
            "undirected" => false,
            other => bail!("{}: label {other:?} is not directed or undirected", at()),
        };
        let file = || -> anyhow::Result<PathBuf> {
            match what.strip_prefix("$HARK_TESTDATA/") {
                Some(rest) => match &testdata {
                    Some(dir) => Ok(Path::new(dir).join(rest)),
                    None => bail!("{}: HARK_TESTDATA is not set (scripts/test sets it)", at()),
                },
                None => Ok(PathBuf::from(what)),
            }
        };
        let source = match kind {
            "say" => Source::Say {
                voice: voices[items.len() % voices.len()].clone(),
                text: what.to_owned(),
            },
            "wav" => Source::Wav(file()?),
            "raw" => Source::Raw(file()?),
            other => bail!("{}: source {other:?} is not say, wav or raw", at()),
        };
        items.push(Item { directed, source });
    }
    if !items.iter().any(|i| i.directed) || items.iter().all(|i| i.directed) {
        bail!(
            "{}: the set needs both directed and undirected utterances",
            path.display()
        );
    }
    Ok(items)
}

/// 16 kHz 16-bit little-endian mono samples.
fn read_raw(path: &Path) -> anyhow::Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect())
}

impl Item {
    fn audio(&self) -> anyhow::Result<Vec<f32>> {
        match &self.source {
            Source::Say { voice, text } => espeak_audio(voice, text),
            Source::Wav(path) => hark_audio::wav::read_wav_16k_mono(path)
                .with_context(|| format!("reading {}", path.display())),
            Source::Raw(path) => read_raw(path),
        }
    }

    fn describe(&self) -> String {
        match &self.source {
            Source::Say { voice, text } => format!("espeak-ng {voice}: {text}"),
            Source::Wav(path) | Source::Raw(path) => path.display().to_string(),
        }
    }
}

/// A judgement the label disagrees with.
#[derive(Debug, Serialize)]
pub struct Mistake {
    pub directed: bool,
    pub source: String,
    pub heard: String,
    pub reason: Reason,
}

/// What `hark bench addressee` prints, as JSON.
#[derive(Debug, Serialize)]
pub struct AddresseeReport {
    pub directed: usize,
    pub undirected: usize,
    /// Directed utterances Hark would answer.
    pub directed_answered: usize,
    /// Undirected utterances Hark would leave alone.
    pub undirected_ignored: usize,
    /// Of what Hark would answer, the share that was meant for it.
    pub precision: f64,
    /// Of what was meant for Hark, the share it would answer.
    pub recall: f64,
    /// Targets: at least 0.90.
    pub undirected_ignored_rate: f64,
    /// Targets: at most 0.05.
    pub directed_missed_rate: f64,
    pub mistakes: Vec<Mistake>,
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Transcribes and judges every utterance of the set at `path`.
pub fn run(
    path: &Path,
    voices: &[String],
    wake: &WakeConfig,
    stt: &mut dyn SpeechToText,
) -> anyhow::Result<AddresseeReport> {
    let items = read_set(path, voices)?;
    eprintln!(
        "hark bench: judging {} utterances from {}",
        items.len(),
        path.display()
    );
    let (mut answered, mut mistakes) = (Vec::new(), Vec::new());
    for item in &items {
        let audio = item.audio()?;
        let heard = stt
            .transcribe(&audio)
            .with_context(|| format!("transcribing {}", item.describe()))?
            .text();
        let reason = judge(wake, &heard, Cues::default());
        if reason.for_hark() != item.directed {
            mistakes.push(Mistake {
                directed: item.directed,
                source: item.describe(),
                heard: heard.clone(),
                reason,
            });
        }
        answered.push(reason.for_hark());
    }
    let directed = items.iter().filter(|i| i.directed).count();
    let undirected = items.len() - directed;
    let pairs = || items.iter().zip(&answered);
    let directed_answered = pairs().filter(|(i, a)| i.directed && **a).count();
    let undirected_ignored = pairs().filter(|(i, a)| !i.directed && !**a).count();
    let answered_total = answered.iter().filter(|a| **a).count();
    Ok(AddresseeReport {
        directed,
        undirected,
        directed_answered,
        undirected_ignored,
        precision: share(directed_answered, answered_total),
        recall: share(directed_answered, directed),
        undirected_ignored_rate: share(undirected_ignored, undirected),
        directed_missed_rate: share(directed - directed_answered, directed),
        mistakes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_is_read_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.tsv");
        let voices = vec!["en-us".to_owned()];
        std::fs::write(
            &path,
            "# a comment\n\ndirected\tsay\tWhat time is it?\nundirected\twav\t/x.wav\n",
        )
        .unwrap();
        let items = read_set(&path, &voices).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].source, Source::Wav("/x.wav".into()));
        std::fs::write(&path, "directed\tsay\tWhat?\nmaybe\tsay\tHm.\n").unwrap();
        let error = format!("{:#}", read_set(&path, &voices).unwrap_err());
        assert!(
            error.contains("set.tsv:2") && error.contains("maybe"),
            "{error}"
        );
        std::fs::write(&path, "directed\tsay\tWhat?\n").unwrap();
        assert!(read_set(&path, &voices).is_err());
    }
}
