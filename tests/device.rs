//! The real device path: a private PulseAudio server with a virtual
//! microphone (scripts/audio-rig), speech played into it with `paplay`, and
//! `hark listen` reading the default capture device through cpal/ALSA.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::rig::AudioRig;
use common::*;

/// Spawns `hark listen --json` on the default device and returns a receiver
/// of its stdout lines once it reports that it is listening.
fn spawn_listener(rig: &AudioRig, extra: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut cmd = hark();
    cmd.args(["listen", "--json"]).args(extra);
    rig.env(&mut cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hark listen");
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("hark: {line}");
            if line.contains("listening") {
                let _ = ready_tx.send(());
            }
        }
    });
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("hark listen never reported that it is listening");
    (child, rx)
}

fn collect_utterances(
    rx: &mpsc::Receiver<String>,
    want: usize,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    let mut utterances = Vec::new();
    while utterances.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        if event["event"] == "utterance" {
            utterances.push(event);
        }
    }
    utterances
}

#[test]
fn speech_played_into_the_virtual_mic_is_transcribed() {
    let rig = AudioRig::start();
    let (mut child, rx) = spawn_listener(&rig, &["--max-utterances", "3"]);
    let jfk: PathBuf = recording(testdata().join("jfk.wav"));
    rig.play_into_mic(&jfk);
    // JFK's sentence, in as many utterances as the dictation VAD cuts it
    // into at his pauses (on a loaded machine a pause can run long).
    let reference = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    let mut utterances = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while utterances.len() < 3 && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = collect_utterances(&rx, 1, left);
        if got.is_empty() {
            break;
        }
        utterances.extend(got);
        let words: usize = utterances
            .iter()
            .map(|u| normalize(u["text"].as_str().unwrap_or("")).len())
            .sum();
        if words >= 4 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !utterances.is_empty(),
        "nothing transcribed from the microphone within 60 s"
    );
    let text: Vec<&str> = utterances
        .iter()
        .map(|u| u["text"].as_str().unwrap())
        .collect();
    let text = text.join(" ");
    let hyp = normalize(&text);
    let head: Vec<String> = normalize(reference).into_iter().take(hyp.len()).collect();
    let errors = word_errors(&head, &hyp);
    assert!(
        hyp.len() >= 4 && errors as f64 <= 0.2 * hyp.len() as f64,
        "heard {text:?} in {utterances:?}"
    );
}

#[test]
fn devices_lists_the_virtual_devices() {
    let rig = AudioRig::start();
    let mut cmd = hark();
    cmd.arg("devices");
    rig.env(&mut cmd);
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("default"), "{}", stdout(&out));
}
