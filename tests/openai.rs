//! `[llm] backend = "openai"`: Hark against a real llama.cpp server (from
//! PyPI llama-cpp-python, built by scripts/llama-server) serving the
//! default SmolLM2, and against a scripted server for the faults real
//! servers rarely show on demand. Every run goes through `hark converse`
//! with files, so the whole conversation path is the daemon's.

mod common;

use std::path::Path;

use common::http::{free_port, Answer, LlamaServer, ScriptedServer, WatchingProxy};
use common::*;

const QUESTION: &str = "What is the capital of France?";
const LONG_REQUEST: &str = "Tell me a long story about a brave knight and a dragon.";
const INTERRUPTION: &str = "Stop please, tell me about the sea instead.";
const FALLBACK: &str = "Sorry, I have no answer to that.";

/// `--set`s that point Hark at `url`.
fn backend(url: &str) -> Vec<String> {
    [
        "llm.backend=openai".to_owned(),
        format!("llm.url={url}"),
        "llm.model=smollm2".to_owned(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_owned(), s])
    .collect()
}

/// Runs `hark converse` on `input` with `args`; the event log.
fn converse(dir: &Path, input: &Path, args: &[String]) -> Vec<serde_json::Value> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    converse_files(dir, input, &args)
}

fn llm_errors(log: &[serde_json::Value]) -> Vec<String> {
    named(log, "error")
        .iter()
        .filter(|e| e["code"] == "llm")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_spoken_question_gets_a_spoken_answer_from_llama_cpp() {
    let server = LlamaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let question = spoken(dir.path(), "question", QUESTION);
    let input = sequence(dir.path(), &[&question], 0.0, 8.0);
    let mut args = backend(&server.url());
    args.extend(["--temperature", "0", "--max-tokens", "40"].map(String::from));
    let log = converse(dir.path(), &input, &args);
    assert!(llm_errors(&log).is_empty(), "{log:#?}");
    let heard = named(&log, "user_turn")[0]["text"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(heard.contains("capital"), "{heard}");
    let replies = replies(&log);
    assert_eq!(replies.len(), 1, "{log:#?}");
    let (reply, interrupted) = &replies[0];
    assert!(
        !interrupted && reply.split_whitespace().count() >= 3,
        "{reply:?}"
    );
    assert_ne!(reply, FALLBACK);
    // The answer was spoken: Whisper hears in the output what was said
    // (tiny, on a short sentence, may miss two words of six: "The capital
    // of Francis Pears" was heard in CI).
    let out = run(hark().arg("transcribe").arg(dir.path().join("hark.wav")));
    let said = stdout(&out);
    assert!(wer(reply, &said) <= 0.5, "said {reply:?}, heard {said:?}");
}

#[test]
fn a_barge_in_closes_the_servers_stream() {
    let server = LlamaServer::start();
    // A slow link: the story is still streaming when the user cuts in.
    let proxy = WatchingProxy::start(server.port, std::time::Duration::from_millis(60));
    let dir = tempfile::tempdir().unwrap();
    let request = spoken(dir.path(), "request", LONG_REQUEST);
    let interruption = spoken(dir.path(), "interruption", INTERRUPTION);
    // The interruption starts about two seconds into Hark's reply, while
    // the story (80 tokens, passed on one read per 60 ms) still streams.
    let input = sequence(dir.path(), &[&request, &interruption], 3.5, 8.0);
    let mut args = backend(&proxy.url());
    args.extend(
        [
            "--max-tokens",
            "80",
            "--system-prompt",
            "You are a storyteller. Answer every request with a long story of many sentences.",
        ]
        .map(String::from),
    );
    let log = converse(dir.path(), &input, &args);
    assert!(!named(&log, "interrupted").is_empty(), "{log:#?}");
    let first = &named(&log, "generation_finished")[0];
    assert_eq!(first["cancelled"], true, "{log:#?}");
    let connections = proxy.connections.lock().unwrap().clone();
    assert!(
        connections.first().is_some_and(|c| c.client_closed_first),
        "Hark did not hang up on the interrupted reply: {connections:?}"
    );
    // History keeps only what was heard, and the interruption was answered.
    let history = named(&log, "history")[0]["turns"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(history[1]["interrupted"], true, "{history:#?}");
    assert_eq!(history[2]["role"], "user");
}

#[test]
fn a_failing_server_gets_the_fallback_and_the_next_turn_asks_again() {
    let server = ScriptedServer::start(vec![
        Answer::Status(500, r#"{"error": {"message": "out of memory"}}"#.into()),
        Answer::BreakAfter(vec!["It is".into()]),
        Answer::Reply(vec!["The answer".into(), " is forty two.".into()]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let question = spoken(dir.path(), "question", QUESTION);
    let input = sequence(dir.path(), &[&question, &question, &question], 5.0, 6.0);
    let log = converse(dir.path(), &input, &backend(&server.url()));
    let errors = llm_errors(&log);
    assert_eq!(errors.len(), 2, "{log:#?}");
    let endpoint = format!("{}/chat/completions", server.url());
    assert!(
        errors[0].contains(&endpoint) && errors[0].contains("HTTP 500"),
        "{errors:?}"
    );
    assert!(errors[0].contains("out of memory"), "{errors:?}");
    assert!(
        errors[1].contains(&endpoint) && errors[1].contains("broke off"),
        "{errors:?}"
    );
    // The first gets the fallback, the second keeps what it already said,
    // the third works: nothing wedged.
    let replies: Vec<String> = replies(&log).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        replies,
        [FALLBACK, "It is", "The answer is forty two."],
        "{log:#?}"
    );
    assert_eq!(server.requests.lock().unwrap().len(), 3);
}

#[test]
fn a_server_that_is_not_there_is_named_and_the_conversation_goes_on() {
    let url = format!("http://127.0.0.1:{}/v1", free_port());
    let dir = tempfile::tempdir().unwrap();
    let question = spoken(dir.path(), "question", QUESTION);
    let input = sequence(dir.path(), &[&question, &question], 4.0, 5.0);
    let log = converse(dir.path(), &input, &backend(&url));
    let errors = llm_errors(&log);
    assert_eq!(errors.len(), 2, "{log:#?}");
    assert!(errors[0].contains(&url), "{errors:?}");
    assert!(
        errors[0].to_lowercase().contains("connection refused"),
        "{errors:?}"
    );
    let replies: Vec<String> = replies(&log).into_iter().map(|(t, _)| t).collect();
    assert_eq!(replies, [FALLBACK, FALLBACK]);
}

#[test]
fn a_readable_key_file_and_a_missing_key_variable_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-test\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = backend("http://127.0.0.1:9/v1");
    args.extend([
        "--set".into(),
        format!("llm.api_key_file={}", key.display()),
    ]);
    let out = run(hark()
        .args(&args)
        .args(["ask", "--local", "-o", "/dev/null", "hi"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refusing the API key file") && err.contains("chmod 600"),
        "{err}"
    );

    let mut args = backend("http://127.0.0.1:9/v1");
    args.extend([
        "--set".into(),
        "llm.api_key_env=HARK_TEST_NO_SUCH_KEY".into(),
    ]);
    let out = run(hark()
        .args(&args)
        .args(["ask", "--local", "-o", "/dev/null", "hi"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("HARK_TEST_NO_SUCH_KEY, which is not set"),
        "{}",
        stderr(&out)
    );

    let out = run(hark().args(["--set", "llm.backend=openai", "ask", "--local", "hi"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("llm.url"), "{}", stderr(&out));
}

#[test]
fn a_model_calls_a_users_tool_and_a_skill_and_speaks_its_answer() {
    let server = ScriptedServer::start(vec![
        Answer::ToolCall("weather".into(), r#"{"city": "Paris"}"#.into()),
        Answer::ToolCall(
            "set_timer".into(),
            r#"{"seconds": 300, "label": "tea"}"#.into(),
        ),
        Answer::Reply(vec![
            "It is sunny,".into(),
            " and your tea timer is set.".into(),
        ]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hark.toml");
    std::fs::write(
        &config,
        r#"
[[tools]]
name = "weather"
description = "The weather in a city."
command = ["echo", "sunny in {city}"]
[tools.parameters]
type = "object"
[tools.parameters.properties.city]
type = "string"
"#,
    )
    .unwrap();
    let question = spoken(dir.path(), "question", "How is the weather in Paris?");
    let input = sequence(dir.path(), &[&question], 0.0, 6.0);
    let mut args = backend(&server.url());
    args.extend(["--config".to_owned(), config.display().to_string()]);
    let log = converse(dir.path(), &input, &args);
    let calls: Vec<(String, String)> = named(&log, "tool_call")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("weather".to_owned(), "sunny in Paris".to_owned()),
            (
                "set_timer".to_owned(),
                "timer t1 set for 5 minutes".to_owned()
            ),
        ],
        "{log:#?}"
    );
    assert_eq!(
        replies(&log),
        [("It is sunny, and your tea timer is set.".to_owned(), false)]
    );
    assert!(named(&log, "timers")
        .iter()
        .any(|e| e["timers"].as_array().is_some_and(|t| t.len() == 1)));
    // The model was offered the skills and the command, and got the results.
    let requests = server.requests.lock().unwrap().clone();
    assert!(requests[0].contains("\"set_timer\"") && requests[0].contains("\"weather\""));
    assert!(requests[1].contains("sunny in Paris"), "{}", requests[1]);
    // The history shows the tool calls between question and answer.
    let history = named(&log, "history")[0]["turns"]
        .as_array()
        .unwrap()
        .clone();
    let roles: Vec<&str> = history
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "tool", "tool", "assistant"], "{history:#?}");
    assert!(
        history[1]["text"].as_str().unwrap().contains("weather"),
        "{history:#?}"
    );
}
