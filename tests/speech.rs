//! Hark's voice: `hark say` through the real Piper voice, to a file and to
//! the virtual speaker, judged by Hark's own Whisper; and the voice's bad
//! inputs.

mod common;

use std::time::Duration;

use common::rig::AudioRig;
use common::*;

const SENTENCE: &str =
    "Hello there. I am Hark, your local voice assistant, and I run entirely on this machine.";

#[test]
fn say_to_a_file_is_understood_by_whisper() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("say.wav");
    let out = run(hark().args(["say", "--output"]).arg(&wav).arg(SENTENCE));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(hark().arg("transcribe").arg(&wav));
    let heard = stdout(&out);
    let wer = wer(SENTENCE, &heard);
    assert!(wer <= 0.25, "WER {wer:.2}: heard {heard:?}");
}

#[test]
fn say_plays_on_the_speaker() {
    let rig = AudioRig::start();
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("speaker.wav");
    let mut recorder = rig.record_speaker(&recording);
    std::thread::sleep(Duration::from_millis(300));
    let mut cmd = hark();
    cmd.args(["say", "--local"]).arg(SENTENCE);
    rig.env(&mut cmd);
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(500));
    // parecord writes a valid WAV header when interrupted.
    interrupt(recorder.id());
    let _ = recorder.wait();
    let out = run(hark().arg("transcribe").arg(&recording));
    let heard = stdout(&out);
    let wer = wer(SENTENCE, &heard);
    assert!(
        wer <= 0.25,
        "WER {wer:.2}: the speaker monitor heard {heard:?}"
    );
}

fn interrupt(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

#[test]
fn a_voice_without_its_json_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("lonely.onnx");
    std::fs::write(&onnx, b"not really onnx").unwrap();
    let out = run(hark()
        .args(["say", "--output"])
        .arg(dir.path().join("x.wav"))
        .arg("--voice")
        .arg(&onnx)
        .arg("hi"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("lonely.onnx.json") && err.contains("without its .json"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_missing_onnx_runtime_is_named_not_a_hang() {
    // A store with the voice but without ONNX Runtime.
    let real = hark_models::store::ModelStore::from_env().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"] {
        std::os::unix::fs::symlink(real.root().join(name), dir.path().join(name)).unwrap();
    }
    let started = std::time::Instant::now();
    let out = run(hark()
        .env("HARK_MODELS_DIR", dir.path())
        .args(["say", "--output"])
        .arg(dir.path().join("x.wav"))
        .arg("hi"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("ONNX Runtime") && err.contains("hark models fetch"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // A file that is not a library at all.
    std::fs::write(dir.path().join("libonnxruntime.so.1.24.4"), b"garbage").unwrap();
    let out = run(hark()
        .env("HARK_MODELS_DIR", dir.path())
        .args(["say", "--output"])
        .arg(dir.path().join("x.wav"))
        .arg("hi"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("libonnxruntime.so.1.24.4") && !err.contains("panicked"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(40));
}

#[test]
fn saying_nothing_is_refused() {
    let out = run(hark().args(["say", "  "]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nothing to say"), "{}", stderr(&out));
}

#[test]
fn ask_speaks_what_the_model_writes() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("reply.wav");
    let out = run(hark()
        .args(["ask", "--temperature", "0", "--output"])
        .arg(&wav)
        .arg("Tell me one fun fact about the moon."));
    assert!(out.status.success(), "{}", stderr(&out));
    let written = stdout(&out);
    assert!(!written.trim().is_empty(), "the model wrote nothing");
    let heard = stdout(&run(hark().arg("transcribe").arg(&wav)));
    let wer = wer(&written, &heard);
    assert!(
        wer <= 0.25,
        "WER {wer:.2}: wrote {written:?}, spoke {heard:?}"
    );
}

#[test]
fn a_missing_or_corrupt_language_model_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(hark()
        .env("HARK_MODELS_DIR", dir.path())
        .args(["ask", "--local", "hello"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && err.contains("hark models fetch"),
        "{err}"
    );

    let real = hark_models::store::ModelStore::from_env().unwrap();
    let bytes = std::fs::read(real.path_of(&hark_models::store::SMOLLM2_135M)).unwrap();
    let truncated = dir.path().join("half.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(hark()
        .args(["ask", "--output"])
        .arg(dir.path().join("x.wav"))
        .arg("--llm")
        .arg(&truncated)
        .arg("hello"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("half.gguf") && err.contains("truncated") && !err.contains("panicked"),
        "{err}"
    );

    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "just text").unwrap();
    let out = run(hark()
        .args(["ask", "--local", "--llm"])
        .arg(&text)
        .arg("hello"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a GGUF"), "{}", stderr(&out));
}
