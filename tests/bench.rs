//! `hark bench`: both benchmarks run end to end on the real models and
//! print the JSON report they promise (short runs: these check that the
//! benchmarks work, not how fast Hark is).

mod common;

use common::*;
use serde_json::Value;

fn report(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn bench_converse_measures_a_short_scripted_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("kept");
    let out = run(hark()
        .env("XDG_CONFIG_HOME", dir.path())
        .args([
            "bench",
            "converse",
            "--turns",
            "2",
            "--max-tokens",
            "30",
            "--keep",
        ])
        .arg(&keep));
    let r = report(&out);
    assert_eq!(r["turns_scripted"], 2, "{r:#}");
    assert_eq!(r["interruptions_scripted"], 0, "{r:#}");
    assert_eq!(r["whisper_model"], "tiny.en");
    assert!(r["cores"].as_u64().unwrap() >= 1);
    let turns = r["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{r:#}");
    let heard = turns[0]["heard"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(heard.contains("capital"), "{r:#}");
    assert!(
        !turns[0]["reply"].as_str().unwrap_or_default().is_empty(),
        "{r:#}"
    );
    let v2v = &r["voice_to_voice_ms"];
    assert!(v2v["n"].as_u64().unwrap() >= 1, "{r:#}");
    assert!(v2v["p50"].as_u64().unwrap() > 0, "{r:#}");
    for stage in [
        "endpoint_ms",
        "transcript_ms",
        "first_token_ms",
        "first_audio_ms",
    ] {
        assert!(r[stage]["n"].as_u64().unwrap() >= 1, "{stage}: {r:#}");
    }
    // --keep leaves the recordings and the event log.
    for name in ["user.wav", "hark.wav", "events.jsonl"] {
        assert!(keep.join(name).is_file(), "{name} kept");
    }
    assert!(!named(&events(&keep.join("events.jsonl")), "turn_finished").is_empty());
}

#[test]
fn bench_stt_reports_speed_and_idle_cost() {
    let jfk = recording(testdata().join("jfk.wav"));
    let out = run(hark()
        .args(["bench", "stt", "--runs", "1", "--idle-secs", "2"])
        .arg(&jfk));
    let r = report(&out);
    assert_eq!(r["files"].as_array().unwrap().len(), 1, "{r:#}");
    assert!(wer(
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
        r["files"][0]["text"].as_str().unwrap()
    ) < 0.2);
    assert_eq!(r["utterance_3s"]["runs"], 1);
    assert!(r["utterance_3s"]["median_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        (
            r["file_beam_size"].as_u64(),
            r["utterance_beam_size"].as_u64()
        ),
        (Some(5), Some(3))
    );
    let idle = &r["idle_listen"];
    assert!(idle["wall_secs"].as_f64().unwrap() >= 1.9, "{r:#}");
    assert!(
        idle["cpu_percent_of_one_core"].as_f64().unwrap() < 100.0,
        "{r:#}"
    );
}

#[test]
fn bench_converse_measures_the_skills_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(hark()
        .env("XDG_CONFIG_HOME", dir.path())
        .args(["bench", "converse", "--script", "skills", "--turns", "2"]));
    let r = report(&out);
    assert_eq!(r["turns_scripted"], 2, "{r:#}");
    let turns = r["turns"].as_array().unwrap();
    assert!(
        turns[0]["reply"]
            .as_str()
            .unwrap_or_default()
            .starts_with("It"),
        "{r:#}"
    );
    assert!(
        turns[1]["reply"]
            .as_str()
            .unwrap_or_default()
            .contains("Timer set for 5 minutes"),
        "{r:#}"
    );
    assert!(r["answer_ms"]["n"].as_u64().unwrap() >= 1, "{r:#}");
}

#[test]
fn bench_soak_plays_the_script_faster_than_real_time_and_reports_growth() {
    let dir = tempfile::tempdir().unwrap();
    let jfk = recording(testdata().join("jfk.wav"));
    // 40 s of audio at 4x: the first lines of the script (JFK is woven in
    // after the fourth).
    let out = run(hark()
        .env("XDG_CONFIG_HOME", dir.path())
        .args([
            "bench",
            "soak",
            "--hours",
            "0.011",
            "--speed",
            "4",
            "--max-tokens",
            "30",
        ])
        .arg(&jfk));
    let r = report(&out);
    for key in [
        "turns",
        "errors",
        "panics",
        "rss_start_kb",
        "rss_end_kb",
        "rss_peak_kb",
        "rss_growth_percent",
        "fd_growth",
        "thread_growth",
    ] {
        assert!(r[key].is_number(), "{key}: {r:#}");
    }
    assert!(r["turns"].as_u64().unwrap() >= 1, "{r:#}");
    assert_eq!(r["errors"], 0, "{r:#}");
    assert_eq!(r["panics"], 0, "{r:#}");
    let audio_secs = r["audio_hours"].as_f64().unwrap() * 3600.0;
    assert!(audio_secs >= 39.0, "{r:#}");
    assert!(
        r["rss_peak_kb"].as_u64() >= r["rss_end_kb"].as_u64(),
        "{r:#}"
    );
    assert_eq!(r["speed"], 4.0, "{r:#}");
    // A bad speed is refused before anything loads.
    let out = run(hark().args(["bench", "soak", "--speed", "0"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a number above 0"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bench_quality_talks_over_hark_through_a_leaking_speaker() {
    let rig = rig::AudioRig::start();
    rig.echo(-6.0);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = hark();
    rig.env(&mut cmd);
    let out = run(cmd.env("XDG_CONFIG_HOME", dir.path()).args([
        "bench",
        "quality",
        "--questions",
        "1",
        "--backchannels",
        "2",
        "--interruptions",
        "2",
        "--noise-secs",
        "8",
        "--max-tokens",
        "40",
    ]));
    let r = report(&out);
    for key in [
        "self_interruptions",
        "false_barge_in_rate",
        "missed_interruption_rate",
        "noise_outputs",
    ] {
        assert!(r[key].is_number(), "{key}: {r:#}");
    }
    assert_eq!(r["replies_unprompted"], 1, "{r:#}");
    assert_eq!(r["backchannels_played"], 2, "{r:#}");
    assert_eq!(r["interruptions_played"], 2, "{r:#}");
    assert_eq!(r["timeouts"], 0, "{r:#}");
}

/// Issue 15's labelled set (tests/addressee/set.tsv): speech meant for
/// Hark and speech that is not, in voices that are not Hark's, judged as
/// `[wake] addressee = "likely"` would after Whisper has transcribed it.
/// The targets are at least 90% of undirected speech ignored and at most
/// 5% of directed speech missed; the set reaches 3.3% (two requests
/// tiny.en mis-hears in espeak-ng's voices: "The Road Pride and Preared
/// you guess"). Each miss is 1.6%, and one word decoded otherwise on
/// another CPU can add one, so this holds the judge to 10%.
#[test]
fn bench_addressee_tells_speech_for_hark_from_speech_that_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let set = repo_root().join("tests/addressee/set.tsv");
    let out = run(hark()
        .env("XDG_CONFIG_HOME", dir.path())
        .args(["bench", "addressee"])
        .arg(&set));
    let report = report(&out);
    let rate = |key: &str| report[key].as_f64().unwrap();
    assert!(report["directed"].as_u64().unwrap() >= 60, "{report}");
    assert!(report["undirected"].as_u64().unwrap() >= 60, "{report}");
    assert!(rate("undirected_ignored_rate") >= 0.90, "{report:#}");
    assert!(rate("directed_missed_rate") <= 0.10, "{report:#}");
}
