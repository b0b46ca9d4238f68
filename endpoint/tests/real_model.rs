//! Smart Turn itself, on speech from the Piper voice: a finished question
//! scores as complete, a sentence cut off in the middle as incomplete, and
//! a call is quick. Runs when HARK_SMART_TURN (the model), HARK_ORT_LIB
//! (ONNX Runtime) and HARK_PIPER_VOICE are set, as scripts/test sets them;
//! skipped otherwise.

use std::path::PathBuf;
use std::time::Instant;

use hark_endpoint::{EndpointError, SmartTurn, TurnDetector};

fn paths() -> Option<(PathBuf, PathBuf, PathBuf)> {
    Some((
        std::env::var_os("HARK_SMART_TURN")?.into(),
        std::env::var_os("HARK_ORT_LIB")?.into(),
        std::env::var_os("HARK_PIPER_VOICE")?.into(),
    ))
}

/// Speaks with the Piper voice, at 16 kHz.
struct Speaker(hark_tts::PiperVoice);

impl Speaker {
    fn say(&mut self, text: &str) -> Vec<f32> {
        let pcm = self.0.synthesize(text).unwrap();
        hark_audio::resample::resample_mono(&pcm, self.0.sample_rate(), 16_000).unwrap()
    }
}

#[test]
fn a_finished_question_is_complete_and_a_cut_sentence_is_not() {
    let Some((model, ort, voice)) = paths() else {
        println!("skipped: set HARK_SMART_TURN, HARK_ORT_LIB and HARK_PIPER_VOICE to run");
        return;
    };
    let mut voice = Speaker(hark_tts::PiperVoice::load(&voice, &ort, 1).unwrap());
    let mut turn = SmartTurn::load(&model, &ort).unwrap();
    // Piper's voice varies from run to run (its noise is drawn afresh),
    // and now and then a take sits on the fence: judge the median of three.
    let mut median_of_three = |text: &str| {
        let mut scores: Vec<f32> = (0..3)
            .map(|_| turn.complete(&voice.say(text)).unwrap())
            .collect();
        scores.sort_by(f32::total_cmp);
        scores[1]
    };
    let complete = median_of_three("What is the capital of France?");
    let cut = median_of_three("I would like to know the");
    println!("complete {complete:.3}, cut {cut:.3}");
    assert!(complete > 0.5, "{complete}");
    assert!(cut < 0.5, "{cut}");
    let speech = voice.say("Tell me a long story about a brave knight and a dragon.");
    let mut times: Vec<u128> = (0..5)
        .map(|_| {
            let started = Instant::now();
            turn.complete(&speech).unwrap();
            started.elapsed().as_millis()
        })
        .collect();
    times.sort_unstable();
    println!("one call: median {} ms, max {} ms", times[2], times[4]);
}

#[test]
fn a_missing_or_corrupt_model_is_named() {
    let Some((_, ort, _)) = paths() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.onnx");
    assert!(matches!(
        SmartTurn::load(&missing, &ort),
        Err(EndpointError::ModelMissing { .. })
    ));
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"not a model at all").unwrap();
    let e = SmartTurn::load(&corrupt, &ort).err().unwrap().to_string();
    assert!(e.contains("corrupt.onnx"), "{e}");
}
