//! `hark` as a client of a running daemon: status, say, ask, interrupt,
//! mute, push-to-talk, mode, history, a live monitor of the signals, and
//! streaming audio in as the microphone (`hark stream`).
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
    fn toggle_listening(&self) -> zbus::Result<bool>;
    fn set_muted(&self, muted: bool) -> zbus::Result<()>;
    fn set_mode(&self, mode: &str) -> zbus::Result<()>;
    fn clear_history(&self) -> zbus::Result<()>;
    fn get_history(&self) -> zbus::Result<Vec<(String, String, u64)>>;
    fn open_audio_input(&self, format: &str) -> zbus::Result<zbus::OwnedFd>;
    fn set_timer(&self, seconds: u64, label: &str) -> zbus::Result<String>;
    fn cancel_timer(&self, id: &str) -> zbus::Result<()>;

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
    #[zbus(property)]
    fn timers(&self) -> zbus::Result<Vec<(String, String, u64)>>;
}

/// `hark timers …`.
#[derive(Subcommand, Debug, Clone)]
pub enum TimersCommand {
    /// Set a timer: `hark timers set 5m tea`, `… 90s`, `… 1h30m`, `… 300`.
    Set {
        /// How long: seconds, or with units (h, m, s), e.g. 1h30m.
        #[arg(value_parser = parse_duration)]
        duration: u64,
        /// What it is for; said when it goes off.
        #[arg(default_value = "")]
        label: String,
    },
    /// Cancel a timer by its id (as `hark timers` lists them).
    Cancel { id: String },
}

/// "90", "90s", "5m", "1h30m", "2h" as seconds.
fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' if !number.is_empty() => {
                let n: u64 = number
                    .parse()
                    .map_err(|_| format!("{text:?}: number too large"))?;
                let unit = match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                total = total.saturating_add(n.saturating_mul(unit));
                number.clear();
            }
            _ => {
                return Err(format!(
                    "{text:?} is not a duration: use seconds or units, such as 90, 90s, 5m or 1h30m"
                ))
            }
        }
    }
    if !number.is_empty() {
        return Err(format!(
            "{text:?}: a unit (h, m or s) is missing after {number}"
        ));
    }
    Ok(total)
}

/// `hark ptt start|stop|toggle`.
#[derive(Subcommand, Debug, Clone, Copy)]
pub enum PushToTalk {
    /// Start listening (key pressed).
    Start,
    /// Stop listening (key released).
    Stop,
    /// Start listening, or stop if listening: one desktop shortcut
    /// (GNOME, KDE) for push-to-talk. Prints `listening` or `not listening`.
    Toggle,
}

/// `hark monitor`'s flags.
#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// One JSON object per line instead of text.
    #[arg(long, conflicts_with = "hud")]
    pub json: bool,
    /// Draw the heads-up display's pages (the HudPage signal) in a box of
    /// the configured `[hud] columns` × `lines`, as glasses would show them.
    #[arg(long)]
    pub hud: bool,
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
    History {
        json: bool,
        clear: bool,
    },
    Monitor {
        json: bool,
        /// Draw HUD pages in a box of this size instead.
        hud: Option<hark_converse::hud::HudConfig>,
    },
    Stream(StreamArgs),
    Timers(Option<TimersCommand>),
}

/// `hark stream`.
#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// A WAV file (any rate, channels and sample format), or `-` for raw
    /// PCM on standard input (for example from `arecord -t raw`).
    #[arg(value_name = "FILE|-")]
    pub input: std::path::PathBuf,

    /// Format of standard input: raw PCM as ENCODING[:RATE[:CHANNELS]]
    /// (encoding s16le or f32le), or packets each preceded by its length
    /// (u16 little-endian) as opus:RATE or lc3:RATE:FRAME_US.
    #[arg(long, value_name = "FORMAT", default_value = "s16le")]
    pub format: String,
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
        Request::PushToTalk(PushToTalk::Toggle) => {
            let listening = hark.toggle_listening().await.map_err(explain)?;
            println!(
                "{}",
                if listening {
                    "listening"
                } else {
                    "not listening"
                }
            );
        }
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
        Request::Monitor { json, hud } => monitor(hark, connection, json, hud).await?,
        Request::Timers(None) => {
            let timers = hark.timers().await.map_err(explain)?;
            if timers.is_empty() {
                println!("no timers");
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            for (id, label, due) in timers {
                let left = due.saturating_sub(now).div_ceil(1000);
                let label = if label.is_empty() {
                    "(unnamed)".into()
                } else {
                    label
                };
                println!(
                    "{id:>4}  {:>2}:{:02}:{:02} left  {label}",
                    left / 3600,
                    left / 60 % 60,
                    left % 60
                );
            }
        }
        Request::Timers(Some(TimersCommand::Set { duration, label })) => {
            let id = hark.set_timer(duration, &label).await.map_err(explain)?;
            println!("{id}");
        }
        Request::Timers(Some(TimersCommand::Cancel { id })) => {
            hark.cancel_timer(&id).await.map_err(explain)?
        }
        Request::Stream(args) => stream(hark, args).await?,
    }
    Ok(())
}

/// Feeds a WAV file or standard input to the daemon through
/// `OpenAudioInput`; the daemon hears it instead of its microphone until
/// the end, then goes back to the microphone.
async fn stream(hark: &HarkProxy<'_>, args: StreamArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let from_stdin = args.input.as_os_str() == "-";
    // A file is decoded here, so the daemon only ever gets 16 kHz mono.
    let (format, wav) = if from_stdin {
        (args.format.clone(), None)
    } else {
        let samples = hark_audio::wav::read_wav_16k_mono(&args.input)?;
        let bytes = hark_audio::stream::to_s16le(&samples);
        ("s16le".to_owned(), Some(bytes))
    };
    let fd = hark.open_audio_input(&format).await.map_err(explain)?;
    let mut socket = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    eprintln!(
        "hark: streaming {} into Hark as its microphone",
        if from_stdin {
            "standard input".into()
        } else {
            args.input.display().to_string()
        }
    );
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        // The daemon reads in real time, so these writes take as long as
        // the audio lasts.
        let written = match wav {
            Some(bytes) => socket.write_all(&bytes),
            None => std::io::copy(&mut std::io::stdin().lock(), &mut socket).map(|_| ()),
        };
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                anyhow::bail!("Hark stopped listening to the stream")
            }
            other => other.context("streaming audio into Hark"),
        }
    })
    .await??;
    Ok(())
}

/// Prints every signal of the interface, one line each, until interrupted.
async fn monitor(
    hark: &HarkProxy<'_>,
    connection: &zbus::Connection,
    json: bool,
    hud: Option<hark_converse::hud::HudConfig>,
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
            "PlaybackStopped" => {
                let (flushed,): (bool,) = body.deserialize()?;
                serde_json::json!({ "flushed": flushed })
            }
            "Interrupted" => {
                let (spoken,): (String,) = body.deserialize()?;
                serde_json::json!({ "spoken_part": spoken })
            }
            "TurnFinished" => {
                let (text, interrupted, v2v, transcript, token, audio, endpoint, synthesis): (
                    String,
                    bool,
                    i64,
                    i64,
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
                    "endpoint_ms": endpoint,
                    "first_synthesis_ms": synthesis,
                })
            }
            "Error" => {
                let (code, text): (String, String) = body.deserialize()?;
                serde_json::json!({ "code": code, "message": text })
            }
            "TimerFired" => {
                let (label,): (String,) = body.deserialize()?;
                serde_json::json!({ "label": label })
            }
            "WakeDetected" => {
                let (how,): (String,) = body.deserialize()?;
                serde_json::json!({ "how": how })
            }
            "HudPage" => {
                let (text, page, pages): (String, u32, u32) = body.deserialize()?;
                serde_json::json!({ "text": text, "page": page, "pages": pages })
            }
            _ => serde_json::json!({}),
        };
        if let Some(size) = hud {
            if member.as_str() == "HudPage" {
                println!("{}", hud_box(&fields, size));
            }
        } else if json {
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

/// A HUD page drawn in a box of the display's size, its number below.
fn hud_box(page: &serde_json::Value, size: hark_converse::hud::HudConfig) -> String {
    let text = page["text"].as_str().unwrap_or_default();
    let rule = "─".repeat(size.columns + 2);
    let mut out = format!("┌{rule}┐\n");
    let mut lines = text
        .split('\n')
        .map(|l| l.chars().take(size.columns).collect::<String>());
    for _ in 0..size.lines {
        let line = lines.next().unwrap_or_default();
        let pad = size.columns - line.chars().count();
        out.push_str(&format!("│ {line}{} │\n", " ".repeat(pad)));
    }
    let number = format!(" {}/{} ", page["page"], page["pages"]);
    let tail = "─".repeat((size.columns + 2).saturating_sub(number.chars().count()));
    out.push_str(&format!("└{tail}{number}┘"));
    out
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn a_hud_page_is_drawn_in_a_box_of_the_display_size() {
        let size = hark_converse::hud::HudConfig {
            columns: 10,
            lines: 3,
        };
        let page = serde_json::json!({ "text": "Paris is\nthe capital", "page": 1, "pages": 2 });
        let drawn = super::hud_box(&page, size);
        let rows: Vec<&str> = drawn.lines().collect();
        assert_eq!(rows.len(), 5, "{drawn}");
        assert!(rows.iter().all(|r| r.chars().count() == 14), "{drawn}");
        assert_eq!(rows[1], "│ Paris is   │");
        assert!(rows[4].ends_with(" 1/2 ┘"), "{drawn}");
    }

    #[test]
    fn durations_on_the_command_line() {
        assert_eq!(parse_duration("300"), Ok(300));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("5m"), Ok(300));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("1h30").unwrap_err().contains("unit"));
    }
}
