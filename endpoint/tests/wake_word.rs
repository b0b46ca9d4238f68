//! openWakeWord's "hey jarvis" on Hark's ONNX Runtime: heard in Piper's
//! "Hey Jarvis, what time is it?", not in the question alone nor in
//! LibriVox narration. Runs when HARK_WAKE_WORD (the keyword model, with
//! melspectrogram.onnx and embedding_model.onnx beside it), HARK_ORT_LIB
//! and HARK_PIPER_VOICE are set, as scripts/test sets them; skipped
//! otherwise. With HARK_WAKE_REFERENCE (a directory of openWakeWord's own
//! scores, reference.json, and its padded WAVs) it also compares every
//! chunk's score with the Python package's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hark_endpoint::{OpenWakeWord, WakeWordDetector, WakeWordFiles};

fn paths() -> Option<(PathBuf, PathBuf, PathBuf)> {
    Some((
        std::env::var_os("HARK_WAKE_WORD")?.into(),
        std::env::var_os("HARK_ORT_LIB")?.into(),
        std::env::var_os("HARK_PIPER_VOICE")?.into(),
    ))
}

fn detector(keyword: &Path, ort: &Path) -> OpenWakeWord {
    let dir = keyword.parent().unwrap();
    let files = WakeWordFiles {
        melspectrogram: dir.join("melspectrogram.onnx"),
        embedding: dir.join("embedding_model.onnx"),
        keyword: keyword.to_owned(),
    };
    OpenWakeWord::load("hey jarvis", &files, ort, 0.5).unwrap()
}

fn padded(speech: Vec<f32>) -> Vec<f32> {
    let mut audio = vec![0.0; 16_000];
    audio.extend(speech);
    audio.extend(vec![0.0; 16_000]);
    audio
}

#[test]
fn hey_jarvis_is_heard_and_narration_is_not() {
    let Some((keyword, ort, voice)) = paths() else {
        println!("skipped: set HARK_WAKE_WORD, HARK_ORT_LIB and HARK_PIPER_VOICE to run");
        return;
    };
    let mut voice = hark_tts::PiperVoice::load(&voice, &ort, 1).unwrap();
    let mut say = |text: &str| {
        let pcm = voice.synthesize(text).unwrap();
        padded(hark_audio::resample::resample_mono(&pcm, voice.sample_rate(), 16_000).unwrap())
    };
    let called = say("Hey Jarvis, what time is it?");
    let mut wake = detector(&keyword, &ort);
    let started = Instant::now();
    let scores = wake.scores(&called).unwrap();
    let per_chunk = started.elapsed().as_secs_f64() * 1000.0 / scores.len() as f64;
    let best = scores.iter().copied().fold(0.0f32, f32::max);
    println!("hey jarvis: best {best:.3}; {per_chunk:.2} ms per 80 ms chunk");
    assert!(best > 0.5, "{scores:?}");
    let mut wake = detector(&keyword, &ort);
    assert!(wake.push(&called).unwrap().is_some());
    for (what, audio) in [
        ("the question alone", say("What time is it?")),
        (
            "narration",
            hark_audio::wav::read_wav_16k_mono(
                "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
            )
            .unwrap(),
        ),
    ] {
        let mut wake = detector(&keyword, &ort);
        let best = wake
            .scores(&padded(audio))
            .unwrap()
            .into_iter()
            .fold(0.0f32, f32::max);
        println!("{what}: best {best:.4}");
        assert!(best < 0.5, "{what}: {best}");
    }
}

#[test]
fn every_chunk_scores_as_openwakeword_scores_it() {
    let (Some((keyword, ort, _)), Some(reference)) = (
        paths(),
        std::env::var_os("HARK_WAKE_REFERENCE").map(PathBuf::from),
    ) else {
        println!("skipped: set HARK_WAKE_REFERENCE too to run");
        return;
    };
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference.join("reference.json")).unwrap())
            .unwrap();
    for name in [
        "jarvis_en-us",
        "jarvis_en-gb",
        "jarvis_piper",
        "neg_librivox",
    ] {
        let audio =
            hark_audio::wav::read_wav_16k_mono(reference.join(format!("audio/padded_{name}.wav")))
                .unwrap();
        let mut wake = detector(&keyword, &ort);
        let ours = wake.scores(&audio).unwrap();
        let theirs: Vec<f64> = expected[name]["hey_jarvis_scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        println!(
            "{name}: {} chunks, largest difference {worst:.4}",
            theirs.len()
        );
        assert!(worst < 0.01, "{name}: ours {ours:?}\ntheirs {theirs:?}");
    }
}
