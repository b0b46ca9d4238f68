//! A reference companion for smart glasses: what an app on the phone does
//! between the glasses and Hark, with a WAV file standing in for the
//! glasses' microphone and another for their speaker.
//!
//! ```sh
//! cargo run --release --example companion -- question.wav reply.wav
//! ```
//!
//! 1. `OpenAudioOutput("opus:16000")`: Hark's voice comes back as Opus
//!    packets, each preceded by its length (u16, little-endian); they are
//!    decoded into `reply.wav` (the glasses would play them). On
//!    `PlaybackStopped(true)` a real companion drops what it has buffered.
//! 2. `OpenAudioInput("opus:16000")`: the question is encoded as Opus in
//!    20 ms packets, framed the same way, and written in real time (what
//!    the glasses' microphone would send), then silence until Hark answers.
//! 3. `HudPage(text, page, pages)`: each page is printed in a box of the
//!    display's size, as the glasses would show it.
//!
//! It talks to the session bus (`DBUS_SESSION_BUS_ADDRESS`), and ends when
//! Hark has finished its reply.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

const NAME: &str = "dev.hark.Hark";
const PATH: &str = "/dev/hark/Hark";
const INTERFACE: &str = "dev.hark.Hark1";
/// Opus at Hark's own rate, 20 ms packets.
const RATE: u32 = 16_000;
const PACKET: usize = RATE as usize / 50;
/// The display's size (Hark's `[hud]` defaults).
const COLUMNS: usize = 44;
const LINES: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [question, reply] = args.as_slice() else {
        eprintln!("usage: companion QUESTION.wav REPLY.wav (16 kHz mono 16-bit)");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(question, reply))
}

async fn run(question: &str, reply: &str) -> Result<(), Box<dyn std::error::Error>> {
    let microphone = read_wav(question)?;
    let connection = zbus::Connection::session().await?;
    let hark = zbus::Proxy::new(&connection, NAME, PATH, INTERFACE).await?;
    let mut pages = hark.receive_signal("HudPage").await?;
    let mut stopped = hark.receive_signal("PlaybackStopped").await?;
    let mut finished = hark.receive_signal("TurnFinished").await?;

    // Both streams end when the reply is over.
    let done = Arc::new(AtomicBool::new(false));

    // The voice, decoded on a thread of its own as it arrives.
    let voice: zbus::OwnedFd = hark.call("OpenAudioOutput", &("opus:16000",)).await?;
    let voice = UnixStream::from(std::os::fd::OwnedFd::from(voice));
    let speaker = std::thread::spawn({
        let done = done.clone();
        move || play(voice, &done)
    });

    // The microphone, encoded and sent in real time.
    let mic: zbus::OwnedFd = hark.call("OpenAudioInput", &("opus:16000",)).await?;
    let mic = UnixStream::from(std::os::fd::OwnedFd::from(mic));
    let talking = std::thread::spawn({
        let done = done.clone();
        move || send(mic, microphone, &done)
    });

    let deadline = tokio::time::sleep(Duration::from_secs(90));
    tokio::pin!(deadline);
    let text = loop {
        tokio::select! {
            Some(page) = pages.next() => {
                let (text, page, pages): (String, u32, u32) = page.body().deserialize()?;
                println!("{}", draw(&text, page, pages));
            }
            Some(stop) = stopped.next() => {
                let (flushed,): (bool,) = stop.body().deserialize()?;
                println!("playback stopped (flushed: {flushed}): drop the buffered voice");
            }
            Some(turn) = finished.next() => {
                let body = turn.body();
                let (text, interrupted, ..): (String, bool, i64, i64, i64, i64, i64, i64) =
                    body.deserialize()?;
                println!("reply finished (interrupted: {interrupted})");
                break text;
            }
            _ = &mut deadline => return Err("no reply within 90 s".into()),
        }
    };
    println!("reply: {text}");
    // The last packets are on their way; then hanging up both streams
    // gives Hark its microphone and speaker back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Relaxed);
    talking
        .join()
        .map_err(|_| "the microphone thread panicked")??;
    let samples = speaker
        .join()
        .map_err(|_| "the speaker thread panicked")??;
    write_wav(reply, &samples)?;
    println!(
        "voice: {:.1} s written to {reply}",
        samples.len() as f32 / RATE as f32
    );
    Ok(())
}

/// The question, then silence, as 20 ms Opus packets in real time, until
/// `done`.
fn send(mut mic: UnixStream, mut samples: Vec<i16>, done: &AtomicBool) -> Result<(), String> {
    let mut encoder = opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Voip)
        .map_err(|e| e.to_string())?;
    // Up to a minute of silence after the question.
    samples.resize(samples.len() + 60 * RATE as usize, 0);
    let started = Instant::now();
    for (n, chunk) in samples.chunks(PACKET).enumerate() {
        let mut frame = chunk.to_vec();
        frame.resize(PACKET, 0);
        let packet = encoder
            .encode_vec(&frame, 1275)
            .map_err(|e| e.to_string())?;
        let mut framed = (packet.len() as u16).to_le_bytes().to_vec();
        framed.extend_from_slice(&packet);
        if done.load(Ordering::Relaxed) || mic.write_all(&framed).is_err() {
            return Ok(());
        }
        let due = started + Duration::from_millis(20 * (n as u64 + 1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    Ok(())
}

/// Hark's voice: length-prefixed Opus packets (silence included) until
/// `done` or Hark closes the stream.
fn play(mut voice: UnixStream, done: &AtomicBool) -> Result<Vec<i16>, String> {
    let mut decoder = opus::Decoder::new(RATE, opus::Channels::Mono).map_err(|e| e.to_string())?;
    voice
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let (mut samples, mut pending) = (Vec::new(), Vec::new());
    let mut buffer = [0u8; 4096];
    let mut decoded = vec![0i16; RATE as usize / 10];
    while !done.load(Ordering::Relaxed) {
        let n = match voice.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.to_string()),
        };
        pending.extend_from_slice(&buffer[..n]);
        while pending.len() >= 2 {
            let len = usize::from(u16::from_le_bytes([pending[0], pending[1]]));
            if pending.len() < 2 + len {
                break;
            }
            let packet: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            // An empty packet is a lost one: let the decoder conceal it.
            let got = decoder
                .decode(&packet, &mut decoded, false)
                .map_err(|e| e.to_string())?;
            samples.extend_from_slice(&decoded[..got]);
        }
    }
    Ok(samples)
}

/// A page in a box of the display's size.
fn draw(text: &str, page: u32, pages: u32) -> String {
    let rule = "-".repeat(COLUMNS + 2);
    let mut out = format!("+{rule}+ page {page}/{pages}\n");
    let mut lines = text.lines();
    for _ in 0..LINES {
        let line = lines.next().unwrap_or("");
        out.push_str(&format!("| {line:<COLUMNS$} |\n"));
    }
    out.push_str(&format!("+{rule}+"));
    out
}

fn read_wav(path: &str) -> Result<Vec<i16>, Box<dyn std::error::Error>> {
    let mut reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    if spec.sample_rate != RATE || spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(format!("{path}: want 16 kHz mono 16-bit, got {spec:?}").into());
    }
    Ok(reader.samples::<i16>().collect::<Result<_, _>>()?)
}

fn write_wav(path: &str, samples: &[i16]) -> Result<(), Box<dyn std::error::Error>> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)?;
    for &s in samples {
        writer.write_sample(s)?;
    }
    writer.finalize()?;
    Ok(())
}
