//! The client against a scripted HTTP server on 127.0.0.1: what real
//! servers rarely do on demand (split lines, pings, errors, a slow first
//! token, a dropped connection, a 401) happens here exactly when scripted.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::*;

/// One step of a scripted answer.
#[derive(Clone)]
enum Step {
    /// Bytes written as they are (status line, headers, body pieces).
    Write(Vec<u8>),
    /// A pause.
    Wait(Duration),
    /// Close the connection now (mid-reply, if the script is not done).
    Hangup,
}

fn write(text: &str) -> Step {
    Step::Write(text.as_bytes().to_vec())
}

/// A streaming 200 answer's headers, chunked as servers send SSE.
fn sse_headers() -> Step {
    write(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    )
}

/// One HTTP chunk holding `text`.
fn chunk(text: &str) -> Step {
    write(&format!("{:x}\r\n{text}\r\n", text.len()))
}

fn end_chunks() -> Step {
    write("0\r\n\r\n")
}

fn delta(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

/// What the server saw.
struct Seen {
    /// The request: headers and body.
    request: String,
    /// How long after the script ended (or was told to wait for it) the
    /// client closed its side; `None` if it never did within 5 s.
    closed_after: Option<Duration>,
}

/// Serves `script` to one connection; reports what it saw.
fn serve(script: Vec<Step>) -> (String, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let request = read_request(&mut stream);
        for step in script {
            match step {
                Step::Write(bytes) => {
                    if stream.write_all(&bytes).is_err() {
                        break;
                    }
                    let _ = stream.flush();
                }
                Step::Wait(d) => std::thread::sleep(d),
                Step::Hangup => {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    return Seen {
                        request,
                        closed_after: None,
                    };
                }
            }
        }
        let waited = Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        let closed_after = loop {
            match stream.read(&mut buf) {
                Ok(0) => break Some(waited.elapsed()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    break Some(waited.elapsed())
                }
                Err(_) => break None,
            }
        };
        Seen {
            request,
            closed_after,
        }
    });
    (url, thread)
}

/// Reads the headers and the body their content-length announces.
fn read_request(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return text;
            }
        }
        if n == 0 {
            return String::from_utf8_lossy(&data).into_owned();
        }
    }
}

fn client(url: &str, timeout_ms: u64) -> OpenAiClient {
    OpenAiClient::new(OpenAiConfig {
        url: url.into(),
        model: "smollm2".into(),
        api_key: Some(ApiKey::new(KEY)),
        system_prompt: "Be brief.".into(),
        temperature: 0.2,
        max_tokens: 50,
        first_token_timeout: Duration::from_millis(timeout_ms),
    })
    .unwrap()
}

/// Asks `client` one question; returns the pieces it streamed and the
/// outcome.
fn ask(
    client: &mut OpenAiClient,
    cancel: &CancelHandle,
) -> (Vec<String>, Result<Generation, LlmError>) {
    let mut pieces = Vec::new();
    let result = client.generate(
        &[ChatMessage::user("What is the capital of France?")],
        &mut |p| {
            pieces.push(p.to_owned());
            ControlFlow::Continue(())
        },
        cancel,
    );
    (pieces, result)
}

#[test]
fn a_reply_split_anywhere_with_pings_streams_piece_by_piece() {
    let mut body = String::from(": ping\n\n");
    body += &delta("Paris");
    body += &delta(" is the capital.");
    body += &format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    );
    body += "data: [DONE]\n\n";
    // Cut the body into awkward pieces, one chunk each, with pauses.
    let mut script = vec![sse_headers()];
    for piece in body.as_bytes().chunks(7) {
        script.push(chunk(std::str::from_utf8(piece).unwrap()));
        script.push(Step::Wait(Duration::from_millis(2)));
    }
    script.push(end_chunks());
    let (url, server) = serve(script);
    let mut client = client(&url, 5000);
    let (pieces, result) = ask(&mut client, &CancelHandle::default());
    let generation = result.unwrap();
    assert_eq!(pieces, ["Paris", " is the capital."]);
    assert_eq!(generation.text, "Paris is the capital.");
    assert!(!generation.cancelled);
    assert!(generation.first_token_ms > 0.0);
    let seen = server.join().unwrap();
    assert!(
        seen.request
            .starts_with("POST /v1/chat/completions HTTP/1.1"),
        "{}",
        seen.request
    );
    assert!(
        seen.request
            .contains(&format!("authorization: Bearer {KEY}")),
        "{}",
        seen.request
    );
    let body: Value = serde_json::from_str(seen.request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["model"], "smollm2");
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "What is the capital of France?"})
    );
}

/// What the scripted servers are sent as the key.
const KEY: &str = "sk-hark-test-0123456789";

#[test]
fn the_api_key_is_never_shown_even_when_the_server_quotes_it() {
    let body = format!(
        r#"{{"error": {{"message": "Incorrect API key provided: {KEY}, or sk-hark***6789 ({})"}}}}"#,
        &KEY[3..15]
    );
    let (url, _server) = serve(vec![write(&format!(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))]);
    assert_eq!(
        format!("{:?}", Some(ApiKey::new(KEY))),
        "Some(ApiKey(hidden))"
    );
    let mut client = client(&url, 5000);
    let (_, result) = ask(&mut client, &CancelHandle::default());
    let e = result.unwrap_err().to_string();
    assert!(e.contains("Incorrect API key provided: [API key]"), "{e}");
    assert!(!e.contains("0123456789") && !e.contains("hark-test"), "{e}");
}

#[test]
fn a_401_with_a_json_body_is_named_with_the_url() {
    let body = r#"{"error": {"message": "Invalid API key", "type": "invalid_request_error"}}"#;
    let (url, _server) = serve(vec![write(&format!(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))]);
    let (pieces, result) = ask(&mut client(&url, 5000), &CancelHandle::default());
    assert!(pieces.is_empty());
    let e = result.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{url}/chat/completions: HTTP 401 Unauthorized")),
        "{e}"
    );
    assert!(e.contains("Invalid API key"), "{e}");
}

#[test]
fn a_500_with_a_text_body_says_what_the_server_said() {
    let (url, _server) = serve(vec![write(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 14\r\n\r\nmodel exploded",
    )]);
    let e = ask(&mut client(&url, 5000), &CancelHandle::default())
        .1
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP 500 Internal Server Error: model exploded"),
        "{e}"
    );
}

#[test]
fn an_error_inside_the_stream_ends_the_reply_with_it() {
    let (url, _server) = serve(vec![
        sse_headers(),
        chunk(&delta("Par")),
        chunk(&format!(
            "data: {}\n\n",
            json!({"error": {"message": "context overflow"}})
        )),
        end_chunks(),
    ]);
    let (pieces, result) = ask(&mut client(&url, 5000), &CancelHandle::default());
    assert_eq!(pieces, ["Par"]);
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("the server reported an error: context overflow"),
        "{e}"
    );
}

#[test]
fn a_slow_first_token_times_out_naming_the_wait() {
    let (url, _server) = serve(vec![
        sse_headers(),
        chunk(": ping\n\n"),
        Step::Wait(Duration::from_millis(800)),
        chunk(&delta("late")),
        end_chunks(),
    ]);
    let started = Instant::now();
    let (pieces, result) = ask(&mut client(&url, 300), &CancelHandle::default());
    assert!(pieces.is_empty());
    let e = result.unwrap_err().to_string();
    assert!(e.contains("no first token within 300 ms"), "{e}");
    assert!(started.elapsed() < Duration::from_millis(700));
}

#[test]
fn a_connection_dropped_mid_reply_keeps_what_came_and_says_it_broke() {
    let (url, _server) = serve(vec![
        sse_headers(),
        chunk(&delta("Paris is")),
        Step::Wait(Duration::from_millis(50)),
        Step::Hangup,
    ]);
    let (pieces, result) = ask(&mut client(&url, 5000), &CancelHandle::default());
    assert_eq!(pieces, ["Paris is"]);
    let e = result.unwrap_err().to_string();
    assert!(e.contains("the reply broke off"), "{e}");
}

#[test]
fn a_refused_connection_names_the_url_and_the_cause() {
    // A port nobody listens on: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let e = ask(&mut client(&url, 5000), &CancelHandle::default())
        .1
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("{url}/chat/completions: ")), "{e}");
    assert!(e.to_lowercase().contains("connection refused"), "{e}");
}

#[test]
fn an_unknown_host_is_named() {
    let url = "http://hark-no-such-host.invalid:8080/v1";
    let e = ask(&mut client(url, 5000), &CancelHandle::default())
        .1
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(url), "{e}");
    assert!(
        e.contains("dns") || e.contains("resolve") || e.contains("lookup"),
        "{e}"
    );
}

#[test]
fn cancelling_closes_the_connection_at_once() {
    // A server that keeps writing slowly: the client must hang up on it.
    let mut script = vec![sse_headers(), chunk(&delta("One"))];
    for _ in 0..3 {
        script.push(Step::Wait(Duration::from_millis(100)));
        script.push(chunk(": ping\n\n"));
    }
    let (url, server) = serve(script);
    let mut client = client(&url, 5000);
    let cancel = CancelHandle::default();
    let (tx, rx) = mpsc::channel();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            let _: () = rx.recv().unwrap();
            cancel.cancel();
        })
    };
    let mut pieces = Vec::new();
    let started = Instant::now();
    let generation = client
        .generate(
            &[ChatMessage::user("Count.")],
            &mut |p| {
                pieces.push(p.to_owned());
                let _ = tx.send(());
                ControlFlow::Continue(())
            },
            &cancel,
        )
        .unwrap();
    canceller.join().unwrap();
    assert!(generation.cancelled);
    assert_eq!(pieces, ["One"]);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // The server sees the connection close (its writes fail or it reads
    // EOF) well before it would have finished.
    let seen = server.join().unwrap();
    assert!(seen
        .closed_after
        .is_some_and(|d| d < Duration::from_secs(1)));
}

#[test]
fn no_tokens_asked_means_no_request() {
    let mut c = client("http://127.0.0.1:9/v1", 100);
    c.config.max_tokens = 0;
    let (pieces, result) = ask(&mut c, &CancelHandle::default());
    assert!(pieces.is_empty());
    assert_eq!(result.unwrap().text, "");
}

/// Serves one script per connection, in order; each answer closes its
/// connection. Reports every request it read.
fn serve_each(scripts: Vec<Vec<Step>>) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for script in scripts {
            let (mut stream, _) = listener.accept().unwrap();
            requests.push(read_request(&mut stream));
            for step in script {
                match step {
                    Step::Write(bytes) => {
                        let _ = stream.write_all(&bytes);
                    }
                    Step::Wait(d) => std::thread::sleep(d),
                    Step::Hangup => break,
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        requests
    });
    (url, thread)
}

fn closing_sse(body: &str) -> Vec<Step> {
    vec![
        write(&format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )),
    ]
}

fn call_delta(delta: Value) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [delta]}}]})
    )
}

/// Records every call and answers from a table.
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl ToolBox for Recorder {
    fn specs(&self) -> Vec<hark_llm::ToolSpec> {
        vec![hark_llm::ToolSpec {
            name: "get_time".into(),
            description: "The local time".into(),
            parameters: json!({"type": "object", "properties": {"zone": {"type": "string"}}}),
        }]
    }
    fn call(&mut self, name: &str, arguments: &str) -> String {
        self.0.lock().unwrap().push((name.into(), arguments.into()));
        "12:00".into()
    }
}

#[test]
fn tool_calls_streamed_in_pieces_are_run_and_the_answer_follows() {
    let mut first = String::new();
    first += &call_delta(json!({"index": 0, "id": "call_a", "type": "function",
        "function": {"name": "get_", "arguments": ""}}));
    first += &call_delta(json!({"index": 0, "function": {"name": "time", "arguments": "{\"zo"}}));
    first += &call_delta(json!({"index": 0, "function": {"arguments": "ne\": \"UTC\"}"}}));
    first += &format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    );
    let second = delta("It is noon.") + "data: [DONE]\n\n";
    let (url, server) = serve_each(vec![closing_sse(&first), closing_sse(&second)]);
    let mut client = client(&url, 5000);
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    client.offer_tools(Box::new(Recorder(calls.clone())));
    let (pieces, result) = ask(&mut client, &CancelHandle::default());
    assert_eq!(pieces, ["It is noon."]);
    assert_eq!(result.unwrap().text, "It is noon.");
    assert_eq!(
        calls.lock().unwrap().clone(),
        [("get_time".to_owned(), "{\"zone\": \"UTC\"}".to_owned())]
    );
    let requests = server.join().unwrap();
    let body =
        |r: &str| -> Value { serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap() };
    let first_body = body(&requests[0]);
    assert_eq!(first_body["tools"][0]["function"]["name"], "get_time");
    let second_body = body(&requests[1]);
    let messages = second_body["messages"].as_array().unwrap();
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["tool_calls"][0]["id"], "call_a");
    assert_eq!(messages[2]["tool_calls"][0]["function"]["name"], "get_time");
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "call_a", "content": "12:00"})
    );
}

#[test]
fn malformed_tool_calls_are_answered_with_an_error_not_run() {
    let mut first = String::new();
    first += &call_delta(
        json!({"index": 0, "id": "c0", "function": {"name": "get_time", "arguments": "not json"}}),
    );
    first += &call_delta(json!({"id": "no-index"}));
    first += &format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"tool_calls": "oops"}}]})
    );
    first += "data: [DONE]\n\n";
    let second = delta("Sorry.") + "data: [DONE]\n\n";
    let (url, server) = serve_each(vec![closing_sse(&first), closing_sse(&second)]);
    let mut client = client(&url, 5000);
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    client.offer_tools(Box::new(Recorder(calls.clone())));
    let (pieces, result) = ask(&mut client, &CancelHandle::default());
    assert_eq!(pieces, ["Sorry."]);
    assert!(result.is_ok());
    assert!(calls.lock().unwrap().is_empty(), "nothing malformed is run");
    let requests = server.join().unwrap();
    let second: Value =
        serde_json::from_str(requests[1].split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let results: Vec<String> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(results[0].contains("not a JSON object"), "{results:?}");
    assert!(
        results.iter().any(|r| r.contains("malformed")),
        "{results:?}"
    );
}

#[test]
fn a_server_that_refuses_tools_is_asked_again_without_them() {
    let refusal = r#"{"error": {"message": "tools are not supported by this model"}}"#;
    let (url, server) = serve_each(vec![
        vec![write(&format!(
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{refusal}",
            refusal.len()
        ))],
        closing_sse(&(delta("Fine.") + "data: [DONE]\n\n")),
        closing_sse(&(delta("Again.") + "data: [DONE]\n\n")),
    ]);
    let mut client = client(&url, 5000);
    client.offer_tools(Box::new(Recorder(Default::default())));
    assert_eq!(ask(&mut client, &CancelHandle::default()).0, ["Fine."]);
    assert_eq!(ask(&mut client, &CancelHandle::default()).0, ["Again."]);
    let requests = server.join().unwrap();
    assert!(requests[0].contains("\"tools\""));
    assert!(
        !requests[1].contains("\"tools\""),
        "no tools after the refusal"
    );
    assert!(!requests[2].contains("\"tools\""));
}
