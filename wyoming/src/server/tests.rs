//! The server against raw sockets: every request it answers, and every
//! way a client can misbehave. The Python client and wyoming-satellite
//! drive the real thing in the workspace's `tests/wyoming.rs`.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;
use crate::codec::{Event, EventReader};
use crate::message::{Model, Program};

/// Says what it got: "N samples in LANGUAGE"; a tenth of a second of
/// audio per character of text, at 8 kHz.
struct Fake;

impl Services for Fake {
    fn info(&self) -> Info {
        Info {
            asr: vec![Program {
                name: "fake-asr".into(),
                models: Some(vec![Model {
                    name: "tiny".into(),
                    ..Model::default()
                }]),
                ..Program::default()
            }],
            ..Info::default()
        }
    }

    fn transcribe(&self, samples: &[f32], language: Option<&str>) -> Result<String, String> {
        if samples.is_empty() {
            return Err("no audio".into());
        }
        Ok(format!(
            "{} samples in {}",
            samples.len(),
            language.unwrap_or("?")
        ))
    }

    fn synthesize(&self, text: &str, _: Option<&VoiceChoice>) -> Result<(Vec<f32>, u32), String> {
        Ok((vec![0.25; 800 * text.chars().count()], 8_000))
    }
    fn wake(&self) -> Option<&dyn WakeService> {
        Some(self)
    }
}

/// Half a second of audio is an utterance; a loud one is the name.
struct HalfSeconds(Vec<f32>);

impl UtteranceListener for HalfSeconds {
    fn push(&mut self, samples: &[f32]) -> Vec<Vec<f32>> {
        self.0.extend_from_slice(samples);
        let mut ended = Vec::new();
        while self.0.len() >= 8_000 {
            ended.push(self.0.drain(..8_000).collect());
        }
        ended
    }
}

impl WakeService for Fake {
    fn listener(&self) -> Box<dyn UtteranceListener> {
        Box::new(HalfSeconds(Vec::new()))
    }
    fn detect(&self, utterance: &[f32], names: &[String]) -> Option<String> {
        (utterance[0] > 0.25).then(|| names.first().cloned().unwrap_or("hark".into()))
    }
}

fn start(limits: ServerLimits) -> WyomingServer {
    let endpoint = Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port: 0,
    };
    WyomingServer::start(&endpoint, Arc::new(Fake), limits).unwrap()
}

struct Peer {
    writer: TcpStream,
    reader: EventReader<TcpStream>,
}

impl Peer {
    fn connect(server: &WyomingServer) -> Peer {
        let Endpoint::Tcp { port, .. } = server.endpoint() else {
            unreachable!()
        };
        let stream = TcpStream::connect(("127.0.0.1", *port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Peer {
            writer: stream.try_clone().unwrap(),
            reader: EventReader::new(stream),
        }
    }

    fn send(&mut self, message: Message) {
        write_event(&mut self.writer, &message.to_event()).unwrap();
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn next(&mut self) -> Option<Message> {
        self.reader
            .read_event()
            .unwrap()
            .map(|e| Message::from_event(e).unwrap())
    }

    /// The next message, which must be an error; its code.
    fn error_code(&mut self) -> String {
        match self.next() {
            Some(Message::Error { code, .. }) => code.unwrap_or_default(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn closed(&mut self) -> bool {
        matches!(self.reader.read_event(), Ok(None) | Err(_))
    }
}

fn utterance(peer: &mut Peer, format: AudioFormat, samples: usize) {
    peer.send(Message::Transcribe {
        name: None,
        language: Some("en".into()),
    });
    peer.send(Message::AudioStart {
        format,
        timestamp: None,
    });
    let bytes = vec![0u8; samples * (format.width * format.channels) as usize];
    for chunk in bytes.chunks(4096) {
        peer.send(Message::AudioChunk {
            format,
            timestamp: None,
            audio: chunk.to_vec(),
        });
    }
    peer.send(Message::AudioStop { timestamp: None });
}

#[test]
fn describe_transcribe_synthesize_and_ping_are_answered_on_one_connection() {
    let server = start(ServerLimits::default());
    let mut peer = Peer::connect(&server);
    peer.send(Message::Describe);
    assert!(matches!(peer.next(), Some(Message::Info(info)) if info.asr[0].name == "fake-asr"));
    utterance(&mut peer, AudioFormat::HARK_INPUT, 16_000);
    assert_eq!(
        peer.next(),
        Some(Message::Transcript {
            text: "16000 samples in en".into(),
            language: Some("en".into())
        })
    );
    // 48 kHz stereo is heard at 16 kHz mono.
    let format = AudioFormat {
        rate: 48_000,
        width: 2,
        channels: 2,
    };
    utterance(&mut peer, format, 48_000);
    match peer.next() {
        Some(Message::Transcript { text, .. }) => {
            let n: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert!((15_900..=16_100).contains(&n), "{text}");
        }
        other => panic!("{other:?}"),
    }
    peer.send(Message::Synthesize {
        text: "Hi.".into(),
        voice: None,
    });
    let mut samples = 0;
    assert!(
        matches!(peer.next(), Some(Message::AudioStart { format, .. }) if format.rate == 8_000)
    );
    loop {
        match peer.next().unwrap() {
            Message::AudioChunk { audio, .. } => samples += audio.len() / 2,
            Message::AudioStop { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(samples, 2_400);
    peer.send(Message::Ping {
        text: Some("x".into()),
    });
    assert_eq!(
        peer.next(),
        Some(Message::Pong {
            text: Some("x".into())
        })
    );
}

#[test]
fn a_streamed_synthesis_is_spoken_at_its_stop_and_acknowledged() {
    let server = start(ServerLimits::default());
    let mut peer = Peer::connect(&server);
    peer.send(Message::SynthesizeStart { voice: None });
    for part in ["Hel", "lo."] {
        peer.send(Message::SynthesizeChunk { text: part.into() });
    }
    // The plain event that accompanies a stream is not spoken twice.
    peer.send(Message::Synthesize {
        text: "Hello.".into(),
        voice: None,
    });
    peer.send(Message::SynthesizeStop);
    let kinds: Vec<&str> = std::iter::from_fn(|| peer.next())
        .map(|m| match m {
            Message::AudioStart { .. } => "start",
            Message::AudioChunk { .. } => "chunk",
            Message::AudioStop { .. } => "stop",
            Message::SynthesizeStopped => "stopped",
            other => panic!("{other:?}"),
        })
        .take_while(|k| *k != "stopped")
        .collect();
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.last(), Some(&"stop"));
    assert_eq!(kinds.iter().filter(|k| **k == "start").count(), 1);
}

#[test]
fn garbage_and_lengths_of_gigabytes_get_an_error_event_and_lose_only_their_connection() {
    let server = start(ServerLimits::default());
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"{\"type\":\"audio-chunk\",\"payload_length\":4000000000}\n",
        b"{\"type\":\"info\",\"data_length\":9999999999}\n",
        b"{\"version\":\"1\"}\n",
        b"{\"type\":\"audio-start\",\"data_length\":12}\n{\"rate\":\"x\"}",
    ] {
        let mut peer = Peer::connect(&server);
        peer.raw(bytes);
        let code = peer.error_code();
        assert!(["protocol", "bad-event"].contains(&code.as_str()), "{code}");
        assert!(peer.closed(), "{bytes:?}");
    }
    // An event of a kind the server does not serve is passed over.
    let mut peer = Peer::connect(&server);
    peer.send(Message::Other(Event::new("run-something-new")));
    peer.send(Message::Describe);
    assert!(matches!(peer.next(), Some(Message::Info(_))));
}

#[test]
fn a_client_that_vanishes_mid_utterance_costs_nothing_and_others_are_served() {
    let server = start(ServerLimits::default());
    {
        let mut peer = Peer::connect(&server);
        peer.send(Message::AudioStart {
            format: AudioFormat::HARK_INPUT,
            timestamp: None,
        });
        peer.raw(b"{\"type\":\"audio-chunk\",\"data_length\":40,\"payload_length\":100}\n{\"ra");
    }
    let mut peer = Peer::connect(&server);
    utterance(&mut peer, AudioFormat::HARK_INPUT, 1_600);
    assert!(matches!(peer.next(), Some(Message::Transcript { .. })));
}

#[test]
fn too_much_audio_text_or_connections_is_refused_plainly() {
    let limits = ServerLimits {
        max_audio: Duration::from_secs(1),
        max_text_chars: 10,
        max_connections: 2,
        ..ServerLimits::default()
    };
    let server = start(limits);
    let mut peer = Peer::connect(&server);
    utterance(&mut peer, AudioFormat::HARK_INPUT, 20_000);
    assert_eq!(peer.error_code(), "too-large");
    let mut peer = Peer::connect(&server);
    peer.send(Message::Synthesize {
        text: "far too long a text".into(),
        voice: None,
    });
    assert_eq!(peer.error_code(), "too-large");
    let _held: Vec<Peer> = (0..2).map(|_| Peer::connect(&server)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut refused = Peer::connect(&server);
    assert_eq!(refused.error_code(), "busy");
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_stalls_nobody() {
    let limits = ServerLimits {
        write: Duration::from_millis(300),
        ..ServerLimits::default()
    };
    let server = start(limits);
    let mut stuck = Peer::connect(&server);
    // Megabytes of audio asked for and never read.
    for _ in 0..200 {
        stuck.send(Message::Synthesize {
            text: "A long sentence of speech.".into(),
            voice: None,
        });
    }
    let started = Instant::now();
    let mut peer = Peer::connect(&server);
    peer.send(Message::Describe);
    assert!(matches!(peer.next(), Some(Message::Info(_))));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_wake_stream_is_told_when_the_name_is_heard_and_when_it_was_not() {
    let server = start(ServerLimits::default());
    let chunk = |peer: &mut Peer, level: f32| {
        peer.send(Message::AudioChunk {
            format: AudioFormat::HARK_INPUT,
            timestamp: None,
            audio: encode_s16le(&[level; 4_000]),
        })
    };
    let mut peer = Peer::connect(&server);
    peer.send(Message::Detect {
        names: Some(vec!["hark".into()]),
    });
    for level in [0.0, 0.0, 0.5, 0.5] {
        chunk(&mut peer, level);
    }
    assert_eq!(
        peer.next(),
        Some(Message::Detection {
            name: Some("hark".into()),
            timestamp: Some(1_000)
        })
    );
    let mut peer = Peer::connect(&server);
    peer.send(Message::Detect { names: None });
    for _ in 0..4 {
        chunk(&mut peer, 0.0);
    }
    peer.send(Message::AudioStop { timestamp: None });
    assert_eq!(peer.next(), Some(Message::NotDetected));
}
