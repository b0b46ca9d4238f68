//! `[stt]`/`[voice] backend = "wyoming"`: Hark against the real Home
//! Assistant Wyoming servers (wyoming-faster-whisper and wyoming-piper from
//! PyPI, installed by scripts/wyoming-servers into .cache/wyoming), through
//! `hark say` and `hark converse` with files, so the path is the daemon's.
//! The protocol's corner cases (split reads, garbage, timeouts, a server
//! that hangs up) are the hark-wyoming crate's tests, against scripted
//! servers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http::free_port;
use common::*;
use hark_wyoming::{Deadlines, Endpoint};

const QUESTION: &str = "What is the capital of France?";
const WHISPER_FILE: &str = "ggml-tiny.en.bin";
const PIPER_FILES: [&str; 2] = ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"];

/// A real Wyoming server (`asr` or `tts`) on a free port; killed on drop.
struct WyomingServer {
    port: u16,
    child: Child,
}

impl WyomingServer {
    fn start(kind: &str) -> WyomingServer {
        let script = repo_root().join("scripts/wyoming-servers");
        let port = free_port();
        let child = Command::new(script)
            .args(["run", kind, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scripts/wyoming-servers");
        let mut server = WyomingServer { port, child };
        let started = Instant::now();
        let endpoint = server.endpoint();
        let quick = Deadlines {
            connect: Duration::from_millis(500),
            answer: Duration::from_secs(5),
        };
        while hark_wyoming::client::describe(&endpoint, quick).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the Wyoming {kind} server exited: {status} (run scripts/wyoming-servers install)");
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the Wyoming {kind} server did not answer within 120 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn endpoint(&self) -> Endpoint {
        format!("tcp://127.0.0.1:{}", self.port).parse().unwrap()
    }

    fn uri(&self) -> String {
        self.endpoint().to_string()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WyomingServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sets(pairs: &[(&str, String)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(key, value)| ["--set".to_owned(), format!("{key}={value}")])
        .collect()
}

fn on_wyoming(asr: &str, tts: &str) -> Vec<String> {
    sets(&[
        ("stt.backend", "wyoming".into()),
        ("stt.uri", asr.into()),
        ("voice.backend", "wyoming".into()),
        ("voice.uri", tts.into()),
    ])
}

/// `input`: half a second of silence, the spoken question, `tail` seconds
/// of silence.
fn question(dir: &Path, text: &str, tail: f64) -> PathBuf {
    let wav = spoken(dir, "question", text);
    let input = dir.join("input.wav");
    pad_with_silence(&wav, &input, 0.5, tail);
    input
}

fn errors(log: &[serde_json::Value]) -> Vec<(String, String)> {
    named(log, "error")
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap_or_default().to_owned(),
                e["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// What the local Whisper hears in `wav`.
fn heard_in(wav: &Path) -> String {
    stdout(&run(hark().arg("transcribe").arg(wav)))
}

#[test]
fn wyoming_piper_speaks_what_hark_says_with_no_piper_voice_installed() {
    let tts = WyomingServer::start("tts");
    let dir = tempfile::tempdir().unwrap();
    let store = linked_store(dir.path(), &PIPER_FILES);
    let out = dir.path().join("said.wav");
    let text = "The moon is made of rock and dust.";
    let said = run(hark()
        .arg("--models-dir")
        .arg(&store)
        .args(sets(&[
            ("voice.backend", "wyoming".into()),
            ("voice.uri", tts.uri()),
        ]))
        .args(["say", "--output"])
        .arg(&out)
        .arg(text));
    assert!(said.status.success(), "{}", stderr(&said));
    let heard = heard_in(&out);
    assert!(wer(text, &heard) <= 0.25, "said {text:?}, heard {heard:?}");
}

#[test]
fn a_conversation_runs_on_wyoming_ears_and_voice_without_local_whisper_or_piper() {
    let (asr, tts) = (WyomingServer::start("asr"), WyomingServer::start("tts"));
    let dir = tempfile::tempdir().unwrap();
    let input = question(dir.path(), QUESTION, 8.0);
    let store = linked_store(dir.path(), &[WHISPER_FILE, PIPER_FILES[0], PIPER_FILES[1]]);
    let mut args = vec!["--models-dir".to_owned(), store.display().to_string()];
    args.extend(on_wyoming(&asr.uri(), &tts.uri()));
    args.extend(["--temperature", "0", "--max-tokens", "30"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = converse_files(dir.path(), &input, &args);
    assert!(errors(&log).is_empty(), "{:#?}", errors(&log));
    let turn = named(&log, "user_turn");
    let text = turn[0]["text"].as_str().unwrap().to_lowercase();
    assert!(
        text.contains("capital") && text.contains("france"),
        "{text}"
    );
    let replies = replies(&log);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let (reply, interrupted) = &replies[0];
    assert!(
        !interrupted && reply.split_whitespace().count() >= 3,
        "{reply:?}"
    );
    let heard = heard_in(&dir.path().join("hark.wav"));
    assert!(wer(reply, &heard) <= 0.5, "said {reply:?}, heard {heard:?}");
}

/// Waits until `log` holds an event named `name`; the events so far.
fn wait_for(log: &Path, name: &str, child: &mut Child, within: Duration) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let so_far = if log.exists() {
            events(log)
        } else {
            Vec::new()
        };
        if so_far.iter().any(|e| e["event"] == name) {
            return so_far;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("hark converse ended ({status}) before any {name}: {so_far:#?}");
        }
        assert!(
            started.elapsed() < within,
            "no {name} within {within:?}: {so_far:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn servers_that_go_away_mid_conversation_are_stood_in_for_by_the_local_models() {
    let (mut asr, mut tts) = (WyomingServer::start("asr"), WyomingServer::start("tts"));
    let dir = tempfile::tempdir().unwrap();
    let first = spoken(dir.path(), "first", QUESTION);
    let second = spoken(dir.path(), "second", "What is the moon made of?");
    // 14 s between them: time for the reply, and for the test to take the
    // servers away.
    let input = sequence(dir.path(), &[&first, &second], 14.0, 8.0);
    let log = dir.path().join("events.jsonl");
    let mut child = hark()
        .env("XDG_CONFIG_HOME", dir.path())
        .arg("converse")
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("hark.wav"))
        .arg("--events")
        .arg(&log)
        .args(on_wyoming(&asr.uri(), &tts.uri()))
        .args(["--temperature", "0", "--max-tokens", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let so_far = wait_for(&log, "turn_finished", &mut child, Duration::from_secs(60));
    assert!(errors(&so_far).is_empty(), "{:#?}", errors(&so_far));
    asr.stop();
    tts.stop();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = events(&log);
    let turns: Vec<String> = named(&log, "user_turn")
        .iter()
        .map(|t| t["text"].as_str().unwrap().to_lowercase())
        .collect();
    assert_eq!(turns.len(), 2, "{turns:?}");
    // (tiny.en, local or served, has heard "moon" as "man")
    assert!(turns[1].contains("made of"), "{turns:?}");
    assert_eq!(replies(&log).len(), 2, "{:?}", replies(&log));
    // The user was told what failed and who stood in: once per server,
    // or again when a slow machine's turn outlasted the 15 s in which the
    // server is left alone.
    let errors = errors(&log);
    let told = |code: &str, uri: &str, standin: &str| {
        errors
            .iter()
            .filter(|(c, m)| c == code && m.contains(uri) && m.contains(standin))
            .count()
    };
    let stt = told("speech-to-text", &asr.uri(), "local Whisper");
    let voice = told("voice", &tts.uri(), "local Piper");
    assert!(
        (1..=2).contains(&stt) && (1..=2).contains(&voice),
        "{errors:#?}"
    );
    // Both replies were spoken, the second by the local voice.
    let said: Vec<String> = replies(&log).into_iter().map(|(text, _)| text).collect();
    let said = said.join(" ");
    let heard = heard_in(&dir.path().join("hark.wav"));
    assert!(wer(&said, &heard) <= 0.5, "said {said:?}, heard {heard:?}");
}

#[test]
fn without_a_stand_in_a_server_that_is_not_there_fails_each_turn_clearly_and_hark_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = question(dir.path(), QUESTION, 6.0);
    let uri = format!("tcp://127.0.0.1:{}", free_port());
    let mut args = sets(&[
        ("stt.backend", "wyoming".into()),
        ("stt.uri", uri.clone()),
        ("stt.fallback", "false".into()),
    ]);
    args.extend(["--max-tokens", "10"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let log = converse_files(dir.path(), &input, &args);
    let errors = errors(&log);
    assert!(
        errors.iter().any(|(code, m)| code == "speech-to-text"
            && m.contains(&uri)
            && m.contains("cannot connect")),
        "{errors:#?}"
    );
    assert!(named(&log, "user_turn").is_empty(), "{log:#?}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn wyoming_faster_whisper_transcribes_the_corpus_as_well_as_local_whisper() {
    let asr = WyomingServer::start("asr");
    let (mut local, mut served) = (Vec::new(), Vec::new());
    for (file, reference) in speech_corpus() {
        let transcribe = |extra: &[String]| {
            let out = run(hark().arg("transcribe").args(extra).arg(&file));
            assert!(out.status.success(), "{}: {}", file.display(), stderr(&out));
            stdout(&out)
        };
        local.push((reference.clone(), transcribe(&[])));
        served.push((reference, transcribe(&["--wyoming".into(), asr.uri()])));
    }
    let (local_wer, served_wer) = (total_wer(&local), total_wer(&served));
    eprintln!("WER: local Whisper {local_wer:.3}, wyoming-faster-whisper {served_wer:.3}");
    assert!(
        served_wer <= local_wer + 0.02,
        "WER through Wyoming {served_wer:.3} vs local {local_wer:.3}: {served:#?}"
    );
}

/// `hark wyoming serve` on a free port; killed on drop.
struct HarkServer {
    uri: String,
    child: Child,
}

impl HarkServer {
    fn start(extra: &[&str]) -> HarkServer {
        let uri = format!("tcp://127.0.0.1:{}", free_port());
        let child = hark()
            .args(extra)
            .args(["wyoming", "serve", "--listen", &uri])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = HarkServer { uri, child };
        let endpoint: Endpoint = server.uri.parse().unwrap();
        let started = Instant::now();
        while hark_wyoming::client::describe(&endpoint, Deadlines::default()).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("hark wyoming serve exited: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "hark wyoming serve did not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for HarkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs tests/wyoming_client.py with the Python `wyoming` package; its
/// JSON answer.
fn python_client(uri: &str, args: &[&str]) -> serde_json::Value {
    let python = repo_root().join(".cache/wyoming/servers/bin/python");
    assert!(
        python.exists(),
        "run scripts/wyoming-servers install (scripts/test does)"
    );
    let out = run(Command::new(python)
        .arg(repo_root().join("tests/wyoming_client.py"))
        .arg(uri)
        .args(args));
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

#[test]
fn hark_serves_its_whisper_and_voice_to_the_python_wyoming_client() {
    let server = HarkServer::start(&[]);
    let info = python_client(&server.uri, &["describe"]);
    assert_eq!(info["asr"][0]["name"], "hark-whisper", "{info:#}");
    assert_eq!(info["asr"][0]["models"][0]["name"], "tiny.en", "{info:#}");
    assert_eq!(
        info["tts"][0]["voices"][0]["name"], "en_US-joe-medium",
        "{info:#}"
    );

    let jfk = recording(testdata().join("jfk.wav"));
    let heard = python_client(&server.uri, &["transcribe", jfk.to_str().unwrap()]);
    let reference = "And so my fellow Americans, ask not what your country can do for you, \
                     ask what you can do for your country.";
    let text = heard["text"].as_str().unwrap_or_default();
    assert!(wer(reference, text) <= 0.1, "{heard}");

    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("spoken.wav");
    let text = "The moon is made of rock and dust.";
    let spoken = python_client(
        &server.uri,
        &[
            "synthesize",
            text,
            wav.to_str().unwrap(),
            "en_US-joe-medium",
        ],
    );
    assert!(spoken["chunks"].as_u64().unwrap() > 0, "{spoken}");
    let back = heard_in(&wav);
    assert!(wer(text, &back) <= 0.25, "said {text:?}, heard {back:?}");
    // A voice Hark does not have is an error event, not silence.
    let other = python_client(
        &server.uri,
        &["synthesize", "Hi.", wav.to_str().unwrap(), "en_GB-alan"],
    );
    assert!(
        other["error"].as_str().unwrap().contains("en_GB-alan"),
        "{other}"
    );
}

#[test]
fn garbage_on_hark_s_server_loses_that_connection_only() {
    use std::io::{Read, Write};
    let server = HarkServer::start(&[]);
    let port = server
        .uri
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    for bytes in [
        &b"\x00\xff garbage\n"[..],
        b"{\"type\":\"audio-chunk\",\"payload_length\":4000000000}\n",
    ] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("\"type\":\"error\""), "{answer}");
    }
    // A client that vanishes mid-utterance.
    {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"{\"type\":\"audio-chunk\",\"data_length\":38,\"payload_length\":64000}\n")
            .unwrap();
    }
    let info = python_client(&server.uri, &["describe"]);
    assert_eq!(info["asr"][0]["name"], "hark-whisper");
}

#[test]
fn wyoming_satellite_wakes_when_hark_hears_its_name() {
    let hark = HarkServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // Four seconds of silence (the server connects meanwhile), a question
    // without the name, then the name and a question.
    let silence = dir.path().join("silence.wav");
    write_wav(&silence, &vec![0i16; 4 * 16_000]);
    let aside = spoken(dir.path(), "aside", "What time is it?");
    let call = spoken(dir.path(), "call", "Hey Hark.");
    let question = spoken(dir.path(), "question", "What is the weather like?");
    let mut pcm = Vec::new();
    for (part, gap) in [
        (&silence, 0.0),
        (&aside, 6.0),
        (&call, 1.5),
        (&question, 0.0),
    ] {
        pcm.extend(hark_audio::wav::read_wav_16k_mono(part).unwrap());
        pcm.extend(std::iter::repeat_n(0.0, (gap * 16_000.0) as usize));
    }
    let seconds = |wav: &Path| hark_audio::wav::read_wav_16k_mono(wav).unwrap().len() as f64 / 16e3;
    let aside_end = 4.0 + seconds(&aside);
    let name_at = aside_end + 6.0;
    let raw = dir.path().join("mic.raw");
    let bytes: Vec<u8> = pcm
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    std::fs::write(&raw, bytes).unwrap();
    let satellite_uri = format!("tcp://127.0.0.1:{}", free_port());
    let python = repo_root().join(".cache/wyoming/servers/bin/python");
    let mic = format!(
        "{} {} {}",
        python.display(),
        repo_root().join("tests/paced_mic.py").display(),
        raw.display()
    );
    let mut satellite = Command::new(repo_root().join("scripts/wyoming-servers"))
        .args([
            "run",
            "satellite",
            "--name",
            "test",
            "--uri",
            &satellite_uri,
        ])
        .args(["--mic-command", &mic])
        .args(["--mic-command-rate", "16000", "--mic-command-width", "2"])
        .args(["--mic-command-channels", "1"])
        .args(["--wake-uri", &hark.uri, "--wake-word-name", "hark"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let result = python_client(&satellite_uri, &["wait-pipeline"]);
    let _ = satellite.kill();
    let _ = satellite.wait();
    // The satellite asked the pipeline to start at speech to text: it had
    // its wake word, from Hark. Not for the question without the name: the
    // microphone starts up to a few seconds before the server connects, so
    // a wake on the aside would come before aside_end + 1 s, one on the
    // name six seconds later.
    assert_eq!(result["pipeline"]["start_stage"], "asr", "{result}");
    let after = result["after_s"].as_f64().unwrap();
    eprintln!("the satellite woke {after:.1} s in; the name came at {name_at:.1} s of its audio");
    assert!(
        after > aside_end + 1.0,
        "woke {after:.1} s in, on the question said without the name"
    );
}
