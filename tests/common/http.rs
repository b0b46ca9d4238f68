//! HTTP peers for the OpenAI-backend tests: the real llama.cpp server
//! (built by scripts/llama-server into .cache/), a scripted chat server
//! that answers each request as told, and a proxy that watches who closes
//! a connection first.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::repo_root;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port`; the status code, if anything answered.
pub fn get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// llama.cpp's OpenAI-compatible server serving the default SmolLM2 GGUF
/// as "smollm2"; killed on drop.
pub struct LlamaServer {
    pub port: u16,
    child: Child,
}

impl LlamaServer {
    pub fn start() -> LlamaServer {
        let python = repo_root().join(".cache/llama-server/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/llama-server install (scripts/test does)",
            python.display()
        );
        let store = std::env::var_os("HARK_MODELS_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var_os("HOME").unwrap())
                    .join(".local/share/hark/models")
            });
        let gguf = store.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            gguf.is_file(),
            "{} is missing: run hark models fetch",
            gguf.display()
        );
        let port = free_port();
        let child = Command::new(python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&gguf)
            .args(["--model_alias", "smollm2", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--n_ctx", "2048", "--n_threads", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the llama.cpp server");
        let mut server = LlamaServer { port, child };
        let started = Instant::now();
        while get_status(port, "/v1/models") != Some(200) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the llama.cpp server exited: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the llama.cpp server did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the scripted server answers one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// A streamed reply of these pieces, then `[DONE]`.
    Reply(Vec<String>),
    /// This status and body.
    Status(u16, String),
    /// Headers and these pieces, then the connection drops.
    BreakAfter(Vec<String>),
    /// A call of tool `name` with `arguments` (JSON text), streamed in two
    /// deltas, then `[DONE]`.
    ToolCall(String, String),
}

/// A chat server that answers the n-th request with the n-th `Answer`
/// (the last one again after that); it records every request body.
pub struct ScriptedServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl ScriptedServer {
    pub fn start(answers: Vec<Answer>) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let answer = answers[n.min(answers.len() - 1)].clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let request = read_request(&mut stream);
                    seen.lock().unwrap().push(request);
                    let _ = respond(&mut stream, answer);
                });
            }
        });
        ScriptedServer { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

fn delta(text: &str) -> String {
    let piece = serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]});
    format!("data: {piece}\n\n")
}

fn respond(stream: &mut TcpStream, answer: Answer) -> std::io::Result<()> {
    let sse_head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    match answer {
        Answer::Reply(pieces) => {
            stream.write_all(sse_head.as_bytes())?;
            stream.write_all(b": ping\n\n")?;
            for piece in pieces {
                stream.write_all(delta(&piece).as_bytes())?;
                stream.flush()?;
                std::thread::sleep(Duration::from_millis(20));
            }
            stream.write_all(b"data: [DONE]\n\n")?;
        }
        Answer::ToolCall(name, arguments) => {
            stream.write_all(sse_head.as_bytes())?;
            let (first, rest) = arguments.split_at(arguments.len() / 2);
            let deltas = [
                serde_json::json!({"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": name, "arguments": first}}),
                serde_json::json!({"index": 0, "function": {"arguments": rest}}),
            ];
            for delta in deltas {
                let piece = serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [delta]}}]});
                stream.write_all(format!("data: {piece}\n\n").as_bytes())?;
            }
            let end = serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
            stream.write_all(format!("data: {end}\n\ndata: [DONE]\n\n").as_bytes())?;
        }
        Answer::Status(code, body) => {
            write!(
                stream,
                "HTTP/1.1 {code} Scripted\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
        Answer::BreakAfter(pieces) => {
            // A content-length the body never reaches: the client sees the
            // connection break off mid-reply.
            stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 100000\r\n\r\n",
            )?;
            for piece in pieces {
                stream.write_all(delta(&piece).as_bytes())?;
            }
            stream.flush()?;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    stream.flush()?;
    stream.shutdown(Shutdown::Both)
}

/// Reads a request's headers and the body its content-length announces.
fn read_request(stream: &mut TcpStream) -> String {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let Ok(n) = stream.read(&mut buf) else { break };
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
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
                break;
            }
        }
        if n == 0 {
            break;
        }
    }
    String::from_utf8_lossy(&data).into_owned()
}

/// What the proxy saw of one connection.
#[derive(Debug, Default, Clone)]
pub struct Connection {
    /// The server had sent `[DONE]` (finished the reply).
    pub server_finished: bool,
    /// The client closed its side while the server was still sending.
    pub client_closed_first: bool,
}

/// A TCP proxy to 127.0.0.1:`upstream` that records, per connection, who
/// ended it, and passes the server's bytes on no faster than one read per
/// `delay` (a slow link, so a reply is still streaming when it is cut).
pub struct WatchingProxy {
    pub port: u16,
    pub connections: Arc<Mutex<Vec<Connection>>>,
}

impl WatchingProxy {
    pub fn start(upstream: u16, delay: Duration) -> WatchingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let all = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let index = {
                    let mut all = all.lock().unwrap();
                    all.push(Connection::default());
                    all.len() - 1
                };
                let all = all.clone();
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                let up = all.clone();
                // Client → server: a read of 0 means the client closed.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    loop {
                        match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let mut all = up.lock().unwrap();
                                if !all[index].server_finished {
                                    all[index].client_closed_first = true;
                                }
                                let _ = s_write.shutdown(Shutdown::Both);
                                return;
                            }
                            Ok(n) => {
                                if s_write.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 128];
                    let mut tail = Vec::new();
                    loop {
                        match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = c_write.shutdown(Shutdown::Both);
                                return;
                            }
                            Ok(n) => {
                                std::thread::sleep(delay);
                                tail.extend_from_slice(&buf[..n]);
                                if String::from_utf8_lossy(&tail).contains("[DONE]") {
                                    all.lock().unwrap()[index].server_finished = true;
                                }
                                let keep = tail.len().saturating_sub(16);
                                tail.drain(..keep);
                                if c_write.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        WatchingProxy { port, connections }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}
