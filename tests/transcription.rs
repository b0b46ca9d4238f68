//! Word error rate of real Whisper on real speech, through the two user
//! paths: `hark transcribe FILE` and the VAD-segmented `hark listen --input`.
//! And the converse: noise and silence must give no text at all.

mod common;

use common::*;

#[test]
fn transcribe_wer_on_librivox_and_jfk() {
    let mut pairs = Vec::new();
    for (file, reference) in speech_corpus() {
        let out = run(hark().arg("transcribe").arg(&file));
        assert!(
            out.status.success(),
            "hark transcribe {} failed: {}",
            file.display(),
            stderr(&out)
        );
        pairs.push((reference, stdout(&out)));
    }
    let wer = total_wer(&pairs);
    eprintln!("transcribe WER = {wer:.3}");
    assert!(wer <= 0.05, "WER {wer:.3} > 0.05: {pairs:#?}");
}

#[test]
fn listen_input_wer_on_librivox_and_jfk() {
    let mut pairs = Vec::new();
    for (file, reference) in speech_corpus() {
        let out = run(hark().args(["listen", "--json", "--input"]).arg(&file));
        assert!(
            out.status.success(),
            "hark listen {} failed: {}",
            file.display(),
            stderr(&out)
        );
        let mut text = String::new();
        for line in stdout(&out).lines() {
            let event: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            if event["event"] == "utterance" {
                let (start, end) = (
                    event["start_secs"].as_f64().unwrap(),
                    event["end_secs"].as_f64().unwrap(),
                );
                assert!(0.0 <= start && start < end, "bad times in {line}");
                text.push_str(event["text"].as_str().unwrap());
                text.push(' ');
            }
        }
        pairs.push((reference, text));
    }
    let wer = total_wer(&pairs);
    eprintln!("listen WER = {wer:.3}");
    assert!(wer <= 0.05, "WER {wer:.3} > 0.05: {pairs:#?}");
}

#[test]
fn transcribe_json_has_segments_with_times() {
    let file = recording(testdata().join("jfk.wav"));
    let out = run(hark().args(["transcribe", "--json"]).arg(&file));
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let segments = json["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    let duration = json["duration_secs"].as_f64().unwrap();
    assert!((duration - 11.0).abs() < 0.1, "{duration}");
    for s in segments {
        let (a, b) = (
            s["start_secs"].as_f64().unwrap(),
            s["end_secs"].as_f64().unwrap(),
        );
        assert!(0.0 <= a && a < b && b <= duration + 0.01, "{s}");
    }
    assert!(wer(
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
        json["text"].as_str().unwrap()
    ) <= 0.1);
}

#[test]
fn channel_names_are_heard_at_48khz() {
    // 48 kHz recordings exercise the resampler on the way in.
    for (name, words) in [("Front_Left", "front left"), ("Rear_Right", "rear right")] {
        let file = recording(format!("/usr/share/sounds/alsa/{name}.wav"));
        let out = run(hark().arg("transcribe").arg(&file));
        assert!(out.status.success());
        assert!(wer(words, &stdout(&out)) <= 0.5, "{name}: {}", stdout(&out));
    }
}

#[test]
fn noise_and_silence_give_no_text() {
    let noise = recording("/usr/share/sounds/alsa/Noise.wav");
    let out = run(hark().arg("transcribe").arg(&noise));
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "", "Noise.wav produced text");
    let out = run(hark().args(["listen", "--input"]).arg(&noise));
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "", "Noise.wav produced utterances");

    let dir = tempfile::tempdir().unwrap();
    let silence = dir.path().join("silence.wav");
    write_wav(&silence, &vec![0i16; 16000 * 5]);
    for args in [&["transcribe"][..], &["listen", "--input"][..]] {
        let out = run(hark().args(args).arg(&silence));
        assert!(out.status.success());
        assert_eq!(
            stdout(&out).trim(),
            "",
            "silence produced text via {args:?}"
        );
    }
    // Low-level hiss, the other classic "Thank you." trigger.
    let hiss: Vec<i16> = (0..16000 * 5u32)
        .map(|i| (((i.wrapping_mul(2654435761) >> 16) % 200) as i16) - 100)
        .collect();
    let hiss_path = dir.path().join("hiss.wav");
    write_wav(&hiss_path, &hiss);
    let out = run(hark().arg("transcribe").arg(&hiss_path));
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "", "hiss produced text");
}
