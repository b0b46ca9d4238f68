//! `hark` as a client of a running daemon: status, say, ask, interrupt,
//! mute, push-to-talk, mode, history and a live monitor of the signals.
//! Every command goes through the same `dev.hark.Hark1` interface any other
//! app uses.

use clap::{Args, Subcommand};
use futures_util::StreamExt;

use crate::service::{BUS_NAME, INTERFACE, OBJECT_PATH};

#[zbus::proxy(
    interface = "dev.hark.Hark1",
    default_service = "dev.hark.Hark",
    default_path = "/dev/hark/Hark"
)]
pub trait Hark {
    fn say(&self, text: &str) -> zbus::Result<()>;
    fn ask(&self, text: &str) -> zbus::Result<String>;
    fn interrupt(&self) -> zbus::Result<()>;
    fn start_listening(&self) -> zbus::Result<()>;
    fn stop_listening(&self) -> zbus::Result<()>;
    fn set_muted(&self, muted: bool) -> zbus::Result<()>;
    fn set_mode(&self, mode: &str) -> zbus::Result<()>;
    fn clear_history(&self) -> zbus::Result<()>;
    fn get_history(&self) -> zbus::Result<Vec<(String, String, u64)>>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn mode(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn muted(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn input_device(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn output_device(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn models(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn last_turn_latency_ms(&self) -> zbus::Result<u64>;
}

/// `hark ptt start|stop`.
#[derive(Subcommand, Debug, Clone, Copy)]
pub enum PushToTalk {
    /// Start listening (key pressed).
    Start,
    /// Stop listening (key released).
    Stop,
}

#[derive(Args, Debug)]
pub struct JsonArg {
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a client command asks of the daemon.
#[derive(Debug)]
pub enum Request {
    Status,
    Say(String),
    Ask(String),
    Interrupt,
    Mute(bool),
    PushToTalk(PushToTalk),
    Mode(String),
    History { json: bool, clear: bool },
    Monitor { json: bool },
}

fn not_running(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::FDO(fdo) => matches!(
            **fdo,
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
        ),
        zbus::Error::MethodError(name, _, _) => {
            name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner"
        }
        _ => false,
    }
}

/// Turns a D-Bus failure into a message a person can act on.
fn explain(e: zbus::Error) -> anyhow::Error {
    if not_running(&e) {
        return anyhow::anyhow!(
            "Hark is not running (nobody owns {BUS_NAME} on the session bus); start it with \
             `systemctl --user start hark` or `hark daemon`"
        );
    }
    match e {
        zbus::Error::MethodError(name, Some(message), _) => {
            anyhow::anyhow!("{message} ({name})")
        }
        other => anyhow::anyhow!("D-Bus: {other}"),
    }
}

pub fn run(request: Request) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let connection = zbus::Connection::session().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the D-Bus session bus ({e}); is this a desktop session (DBUS_SESSION_BUS_ADDRESS)?"
            )
        })?;
        let hark = HarkProxy::new(&connection).await.map_err(explain)?;
        // Properties are cached; a missing daemon shows up on first use.
        request_on(&hark, &connection, request).await
    })
}

async fn request_on(
    hark: &HarkProxy<'_>,
    connection: &zbus::Connection,
    request: Request,
) -> anyhow::Result<()> {
    match request {
        Request::Status => {
            let state = hark.state().await.map_err(explain)?;
            println!("state:    {state}");
            println!("mode:     {}", hark.mode().await.map_err(explain)?);
            println!("muted:    {}", hark.muted().await.map_err(explain)?);
            println!("input:    {}", hark.input_device().await.map_err(explain)?);
            println!("output:   {}", hark.output_device().await.map_err(explain)?);
            println!(
                "models:   {}",
                hark.models().await.map_err(explain)?.join(", ")
            );
            match hark.last_turn_latency_ms().await.map_err(explain)? {
                0 => println!("latency:  no turn yet"),
                ms => println!("latency:  {ms} ms (end of speech to Hark's voice, last turn)"),
            }
        }
        Request::Say(text) => hark.say(&text).await.map_err(explain)?,
        Request::Ask(text) => println!("{}", hark.ask(&text).await.map_err(explain)?),
        Request::Interrupt => hark.interrupt().await.map_err(explain)?,
        Request::Mute(muted) => hark.set_muted(muted).await.map_err(explain)?,
        Request::PushToTalk(PushToTalk::Start) => hark.start_listening().await.map_err(explain)?,
        Request::PushToTalk(PushToTalk::Stop) => hark.stop_listening().await.map_err(explain)?,
        Request::Mode(mode) => hark.set_mode(&mode).await.map_err(explain)?,
        Request::History { clear: true, .. } => hark.clear_history().await.map_err(explain)?,
        Request::History { json, .. } => {
            for (role, text, unix_ms) in hark.get_history().await.map_err(explain)? {
                if json {
                    let line =
                        serde_json::json!({ "role": role, "text": text, "unix_ms": unix_ms });
                    println!("{line}");
                } else {
                    println!("{role:>9}: {text}");
                }
            }
        }
        Request::Monitor { json } => monitor(hark, connection, json).await?,
    }
    Ok(())
}

/// Prints every signal of the interface, one line each, until interrupted.
async fn monitor(
    hark: &HarkProxy<'_>,
    connection: &zbus::Connection,
    json: bool,
) -> anyhow::Result<()> {
    // Fails plainly when nobody is there to monitor.
    hark.state().await.map_err(explain)?;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(INTERFACE)
        .path(OBJECT_PATH)
        .build()?;
    let mut stream =
        zbus::MessageStream::for_match_rule(rule, connection, std::num::NonZeroUsize::new(64))
            .await?;
    while let Some(message) = stream.next().await {
        let message = message?;
        let header = message.header();
        let Some(member) = header.member() else {
            continue;
        };
        let body = message.body();
        let fields: serde_json::Value = match member.as_str() {
            "StateChanged" | "PartialTranscript" | "FinalTranscript" | "ReplyChunk" => {
                let (text,): (String,) = body.deserialize()?;
                serde_json::json!({ "text": text })
            }
            "Interrupted" => {
                let (spoken,): (String,) = body.deserialize()?;
                serde_json::json!({ "spoken_part": spoken })
            }
            "TurnFinished" => {
                let (text, interrupted, v2v, transcript, token, audio): (
                    String,
                    bool,
                    i64,
                    i64,
                    i64,
                    i64,
                ) = body.deserialize()?;
                serde_json::json!({
                    "text": text,
                    "interrupted": interrupted,
                    "voice_to_voice_ms": v2v,
                    "transcript_ms": transcript,
                    "first_token_ms": token,
                    "first_audio_ms": audio,
                })
            }
            "Error" => {
                let (code, text): (String, String) = body.deserialize()?;
                serde_json::json!({ "code": code, "message": text })
            }
            _ => serde_json::json!({}),
        };
        if json {
            let mut line = serde_json::json!({ "signal": member.as_str() });
            if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields)
            {
                line.extend(fields);
            }
            println!("{line}");
        } else {
            let text: Vec<String> = fields
                .as_object()
                .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            println!("{member} {}", text.join(" "));
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
