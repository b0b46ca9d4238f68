//! End-to-end test with a real Piper voice and ONNX Runtime.
//!
//! Skipped (passes trivially) unless both are provided:
//! - `HARK_PIPER_VOICE`: path to `en_US-joe-medium.onnx` (its `.onnx.json` next to it)
//! - `HARK_ORT_LIB`: path to `libonnxruntime.so.1.24.4`
//!
//! Writes the utterance to /tmp/hark-tts-test.wav so it can be listened to
//! or transcribed (`hark transcribe /tmp/hark-tts-test.wav`).

use std::path::PathBuf;
use std::time::Instant;

use hark_tts::PiperVoice;

const TEXT: &str = "Hello, I am Hark, your voice assistant.";
const WAV_OUT: &str = "/tmp/hark-tts-test.wav";

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn write_wav(path: &str, samples: &[f32], sample_rate: u32) {
    // 16-bit PCM: the most widely readable WAV flavour.
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        writer
            .write_sample((s.clamp(-1.0, 1.0) * i16::MAX as f32) as i16)
            .unwrap();
    }
    writer.finalize().unwrap();
}

#[test]
fn real_voice_synthesizes_speech() {
    let (Some(voice), Some(ort_lib)) = (env_path("HARK_PIPER_VOICE"), env_path("HARK_ORT_LIB"))
    else {
        eprintln!("skipped: set HARK_PIPER_VOICE and HARK_ORT_LIB to run");
        return;
    };

    let started = Instant::now();
    let mut tts = PiperVoice::load(&voice, &ort_lib, 1).expect("load voice");
    let load_s = started.elapsed().as_secs_f64();
    let rate = tts.sample_rate();
    assert_eq!(rate, 22050);

    // Warm-up excluded from the real-time factor: the first run allocates.
    let started = Instant::now();
    let first = tts.synthesize(TEXT).expect("synthesize");
    let first_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let audio = tts.synthesize(TEXT).expect("synthesize");
    let synth_s = started.elapsed().as_secs_f64();

    let duration_s = audio.len() as f64 / rate as f64;
    let peak = audio.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    let rtf = synth_s / duration_s;
    eprintln!(
        "load {load_s:.2}s; first synth {first_s:.2}s; audio {duration_s:.2}s synthesized in \
         {synth_s:.2}s (RTF {rtf:.3}); peak {peak:.3}; wrote {WAV_OUT}"
    );
    write_wav(WAV_OUT, &audio, rate);

    assert!(!first.is_empty());
    assert!(
        (1.0..=5.0).contains(&duration_s),
        "implausible duration {duration_s}s"
    );
    assert!(audio.iter().all(|s| s.is_finite()), "NaN/inf in output");
    assert!(peak > 0.05, "output nearly silent (peak {peak})");

    // Nothing to say → no audio, and no inference call needed.
    assert!(tts.synthesize("").unwrap().is_empty());
    assert!(tts.synthesize("  \n ").unwrap().is_empty());
    assert!(tts.synthesize("... ?!").unwrap().is_empty());

    // Two sentences are synthesized separately and joined with a pause.
    let two = tts.synthesize("Yes. No.").unwrap();
    assert!(
        two.len() as f64 / rate as f64 > 0.4,
        "two sentences too short"
    );
}
