//! Bad input gets a clear message naming the thing, a non-zero exit, and
//! never a panic.

mod common;

use common::*;

fn assert_clean_failure(out: &std::process::Output, must_mention: &[&str]) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(
        out.status.code().is_some(),
        "killed ({}): {err}",
        out.status
    );
    for needle in must_mention {
        assert!(
            err.contains(needle),
            "stderr does not mention {needle:?}: {err}"
        );
    }
}

#[test]
fn missing_model_tells_the_user_to_fetch() {
    let empty = tempfile::tempdir().unwrap();
    let jfk = recording(testdata().join("jfk.wav"));
    let out = run(hark()
        .env("HARK_MODELS_DIR", empty.path())
        .arg("transcribe")
        .arg(&jfk));
    assert_clean_failure(
        &out,
        &["not installed", "hark models fetch", "ggml-tiny.en.bin"],
    );
}

#[test]
fn truncated_model_is_reported_as_corrupt() {
    let store = hark_models::store::ModelStore::from_env().unwrap();
    let model = store.path_of(&hark_models::store::WHISPER_TINY_EN);
    let bytes = std::fs::read(&model)
        .unwrap_or_else(|_| panic!("{} missing; run scripts/setup", model.display()));
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("ggml-tiny.en.bin");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let jfk = recording(testdata().join("jfk.wav"));

    // In the store: caught by the size check before whisper.cpp sees it.
    let out = run(hark()
        .env("HARK_MODELS_DIR", dir.path())
        .arg("transcribe")
        .arg(&jfk));
    assert_clean_failure(&out, &["corrupt", "ggml-tiny.en.bin", "hark models fetch"]);

    // Given by path: whisper.cpp itself must refuse it without crashing us.
    let out = run(hark()
        .arg("transcribe")
        .arg("--model")
        .arg(&truncated)
        .arg(&jfk));
    assert_clean_failure(&out, &["could not be loaded", "ggml-tiny.en.bin"]);

    // `hark models list` flags it.
    let out = run(hark()
        .env("HARK_MODELS_DIR", dir.path())
        .args(["models", "list"]));
    assert_clean_failure(&out, &["hark models fetch"]);
    assert!(stdout(&out).contains("CORRUPT"), "{}", stdout(&out));
}

#[test]
fn bit_flipped_models_of_the_right_size_are_refused_before_loading() {
    // whisper.cpp aborts the whole process on some flipped header bytes
    // ("Rust cannot catch foreign exceptions"): the hash must stop them.
    let dir = tempfile::tempdir().unwrap();
    let jfk = recording(testdata().join("jfk.wav"));
    for (file, command) in [
        (
            "ggml-tiny.en.bin",
            vec!["transcribe", jfk.to_str().unwrap()],
        ),
        (
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            vec!["ask", "--local", "Hello?"],
        ),
        (
            "en_US-joe-medium.onnx",
            vec!["say", "--output", "/dev/null", "Hello."],
        ),
    ] {
        let store = dir.path().join(file).with_extension("store");
        std::fs::create_dir(&store).unwrap();
        let linked = linked_store(&store, &[file]);
        let real = hark_models::store::ModelStore::from_env().unwrap();
        let mut bytes = std::fs::read(real.root().join(file)).unwrap();
        for i in (8..200).step_by(7) {
            bytes[i] ^= 0xff;
        }
        std::fs::write(linked.join(file), &bytes).unwrap();
        let out = run(hark()
            .env("HARK_MODELS_DIR", &linked)
            .env("XDG_CONFIG_HOME", dir.path())
            .args(&command));
        assert_clean_failure(&out, &[file, "corrupt", "sha256", "hark models fetch"]);
    }
}

#[test]
fn non_wav_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "this is not audio\n").unwrap();
    for args in [&["transcribe"][..], &["listen", "--input"][..]] {
        let out = run(hark().args(args).arg(&text));
        assert_clean_failure(&out, &["notes.wav"]);
    }
    let missing = dir.path().join("absent.wav");
    let out = run(hark().arg("transcribe").arg(&missing));
    assert_clean_failure(&out, &["absent.wav"]);
}

#[test]
fn empty_wav_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.wav");
    write_wav(&empty, &[]);
    for args in [&["transcribe"][..], &["listen", "--input"][..]] {
        let out = run(hark().args(args).arg(&empty));
        assert_clean_failure(&out, &["empty.wav", "no audio"]);
    }
}

#[test]
fn no_audio_device_is_explained() {
    // No sound card here, and an audio server that is not there: ALSA's
    // `default` cannot open.
    let dir = tempfile::tempdir().unwrap();
    let out = run(hark()
        .env(
            "PULSE_SERVER",
            format!("unix:{}/nowhere", dir.path().display()),
        )
        .env("XDG_RUNTIME_DIR", dir.path())
        .args(["listen", "--max-utterances", "1"]));
    assert_clean_failure(&out, &["no audio input device", "--input"]);
}

#[test]
fn bad_vad_option_names_the_key_and_range() {
    let jfk = recording(testdata().join("jfk.wav"));
    let out = run(hark()
        .args(["transcribe", "--vad-frame-ms", "25"])
        .arg(&jfk));
    assert_clean_failure(&out, &["frame_ms", "10, 20 or 30"]);
    let out = run(hark()
        .args(["listen", "--pre-roll-ms", "50", "--input"])
        .arg(&jfk));
    assert_clean_failure(&out, &["pre_roll_ms"]);
}

#[test]
fn unknown_model_name_lists_the_known_ones() {
    let jfk = recording(testdata().join("jfk.wav"));
    let out = run(hark().args(["transcribe", "--model", "large-v9"]).arg(&jfk));
    assert_clean_failure(&out, &["large-v9", "tiny.en"]);
}
