//! One configuration for every command: `hark converse`, `bench`, `ask`
//! and `say` read the same file the daemon reads, `--set` overrides it and
//! their own flags override both; a bad file is named, with its line,
//! before anything loads.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const QUESTION: &str = "What is the capital of France?";

/// A config file in `dir` with `text`.
fn config_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `hark converse` on `input` with `args`; its replies per the event log.
fn converse(dir: &Path, input: &Path, args: &[&str]) -> Vec<(String, bool)> {
    replies(&converse_files(dir, input, args))
}

#[test]
fn converse_reads_the_file_and_set_and_flags_override_it_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let question = spoken(dir.path(), "question", QUESTION);
    let input = dir.path().join("input.wav");
    pad_with_silence(&question, &input, 0.5, 5.0);
    let file = config_file(
        dir.path(),
        "hark.toml",
        "[llm]\nmax_tokens = 0\n\n[conversation]\nfallback_reply = \"Nothing from the file.\"\n",
    );
    let file_arg = file.to_str().unwrap();

    assert_eq!(
        converse(dir.path(), &input, &["--config", file_arg]),
        [("Nothing from the file.".to_owned(), false)]
    );
    // HARK_CONFIG names the file too, and --set wins over it.
    let set = [
        "--set",
        "conversation.fallback_reply=Nothing from the command line.",
    ];
    let log = dir.path().join("events.jsonl");
    let out = run(hark()
        .env("HARK_CONFIG", &file)
        .arg("converse")
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("hark.wav"))
        .arg("--events")
        .arg(&log)
        .args(set));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        replies(&events(&log)),
        [("Nothing from the command line.".to_owned(), false)]
    );
    // A flag wins over both: the model may speak again.
    let replies = converse(
        dir.path(),
        &input,
        &[
            "--config",
            file_arg,
            set[0],
            "llm.max_tokens=1",
            "--max-tokens",
            "24",
        ],
    );
    assert_eq!(replies.len(), 1);
    assert!(!replies[0].0.starts_with("Nothing from"), "{replies:?}");
}

#[test]
fn ask_and_say_read_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        "hark.toml",
        "[llm]\nmax_tokens = 0\n\n[conversation]\nfallback_reply = \"Nothing from the file.\"\n",
    );
    let out = run(hark()
        .arg("--config")
        .arg(&file)
        .args(["ask", "--local", "-o"])
        .arg(dir.path().join("ask.wav"))
        .arg("Hello?"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Nothing from the file."),
        "{}",
        stdout(&out)
    );

    let voice = config_file(
        dir.path(),
        "voice.toml",
        "[voice]\nvoice = \"/nowhere/x.onnx\"\n",
    );
    let out = run(hark()
        .arg("--config")
        .arg(&voice)
        .args(["say", "-o"])
        .arg(dir.path().join("say.wav"))
        .arg("hi"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nowhere/x.onnx"), "{}", stderr(&out));
}

#[test]
fn every_command_that_reads_the_file_names_its_errors_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let bad = config_file(
        dir.path(),
        "bad.toml",
        "[vad]\nframe_ms = 20\nagressiveness = 2\n",
    );
    let expected = format!("unknown key vad.agressiveness in {} line 3", bad.display());
    let wav = dir.path().join("x.wav");
    write_wav(&wav, &[0; 1600]);
    let wav = wav.to_str().unwrap();
    for args in [
        vec!["converse", "-i", wav, "-o", "/dev/null"],
        vec!["bench", "converse", "--turns", "1"],
        vec!["ask", "--local", "hi"],
        vec!["say", "--local", "hi"],
        vec!["daemon"],
        vec!["config", "check"],
    ] {
        let started = std::time::Instant::now();
        let out = run(hark().arg("--config").arg(&bad).args(&args));
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(&expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            started.elapsed().as_secs() < 10,
            "{args:?} loaded models first"
        );
    }
    // A flag with a bad value is named like a bad key.
    let out = run(hark().args(["converse", "-i", wav, "--end-silence-ms", "20"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("vad.end_silence_ms = 20 is out of range"),
        "{}",
        stderr(&out)
    );
}
