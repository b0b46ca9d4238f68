//! The clients against scripted servers on loopback: what they send, what
//! they make of answers, and how they fail. The real servers are in the
//! workspace's `tests/wyoming.rs`.

use std::net::TcpListener;
use std::thread::JoinHandle;

use super::*;
use crate::codec::Event;
use crate::message::{Model, Program};
use crate::testing::{quick, read_until, send, serve};

#[test]
fn uris_are_parsed_and_bad_ones_named() {
    assert_eq!(
        "tcp://127.0.0.1:10300".parse::<Endpoint>().unwrap(),
        Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 10300
        }
    );
    assert_eq!(
        "tcp://[::1]:10300/"
            .parse::<Endpoint>()
            .unwrap()
            .to_string(),
        "tcp://[::1]:10300"
    );
    assert_eq!(
        "unix:///run/wyoming.sock".parse::<Endpoint>().unwrap(),
        Endpoint::Unix("/run/wyoming.sock".into())
    );
    for (uri, reason) in [
        ("http://host:1", "unknown scheme"),
        ("tcp://host", "no port"),
        ("tcp://:10300", "no host"),
        ("tcp://host:99999", "port"),
        ("tcp://host:0", "port"),
        ("unix://", "no socket path"),
    ] {
        let err = uri.parse::<Endpoint>().unwrap_err().to_string();
        assert!(err.contains(reason) && err.contains(uri), "{uri}: {err}");
    }
}

#[test]
fn an_utterance_goes_out_as_transcribe_and_audio_and_its_transcript_comes_back() {
    let (endpoint, server) = serve(1, |_, reader, writer| {
        let seen = read_until(reader, "audio-stop");
        send(
            writer,
            Message::Transcript {
                text: " What is the moon made of? ".into(),
                language: Some("en".into()),
            },
        );
        seen
    });
    let mut stt = WyomingStt::new(endpoint, None, Some("en".into()), quick());
    let samples = vec![0.25f32; 16_000 + 800];
    let transcript = stt.transcribe(&samples).unwrap();
    assert_eq!(transcript.text(), "What is the moon made of?");
    let seen = server.join().unwrap().remove(0);
    assert_eq!(
        seen[0],
        Message::Transcribe {
            name: None,
            language: Some("en".into())
        }
    );
    assert!(
        matches!(seen[1], Message::AudioStart { format, .. } if format == AudioFormat::HARK_INPUT)
    );
    let audio: Vec<u8> = seen
        .iter()
        .filter_map(|m| match m {
            Message::AudioChunk { audio, .. } => Some(audio.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(audio, encode_s16le(&samples));
    assert!(matches!(seen.last(), Some(Message::AudioStop { .. })));
}

#[test]
fn a_streamed_transcript_is_read_whole() {
    let (endpoint, server) = serve(2, |i, reader, writer| {
        read_until(reader, "audio-stop");
        send(writer, Message::TranscriptStart { language: None });
        for word in ["Ask ", "not."] {
            send(writer, Message::TranscriptChunk { text: word.into() });
        }
        if i == 0 {
            send(
                writer,
                Message::Transcript {
                    text: "Ask not!".into(),
                    language: None,
                },
            );
        }
        send(writer, Message::TranscriptStop);
        Vec::new()
    });
    let mut stt = WyomingStt::new(endpoint, None, None, quick());
    assert_eq!(stt.transcribe(&[0.0; 1600]).unwrap().text(), "Ask not!");
    assert_eq!(stt.transcribe(&[0.0; 1600]).unwrap().text(), "Ask not.");
    server.join().unwrap();
}

#[test]
fn a_server_that_fails_fails_one_job_with_its_address_and_why() {
    let (endpoint, server) = serve(4, |i, reader, writer| {
        read_until(reader, "audio-stop");
        match i {
            0 => send(
                writer,
                Message::Error {
                    text: "model not loaded".into(),
                    code: None,
                },
            ),
            1 => {} // hangs up
            2 => writer.write_all(b"not wyoming\n").unwrap(),
            _ => std::thread::sleep(Duration::from_millis(1500)), // silent
        }
        Vec::new()
    });
    let uri = endpoint.to_string();
    let mut stt = WyomingStt::new(endpoint, None, None, quick());
    for expect in [
        "model not loaded",
        "closed the connection",
        "not JSON",
        "no answer in time",
    ] {
        let started = Instant::now();
        let err = stt.transcribe(&[0.0; 1600]).unwrap_err().to_string();
        assert!(err.contains(expect) && err.contains(&uri), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "{err}");
    }
    server.join().unwrap();
}

#[test]
fn a_server_that_is_not_there_is_refused_at_once() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint: Endpoint = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let mut stt = WyomingStt::new(endpoint.clone(), None, None, quick());
    let err = stt.transcribe(&[0.0; 160]).unwrap_err().to_string();
    assert!(err.contains("cannot connect"), "{err}");
    assert!(stt.check().is_err());
    let err = WyomingVoice::connect(endpoint, None, quick())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot connect"), "{err}");
}

fn tts_info() -> Message {
    Message::Info(Box::new(Info {
        tts: vec![Program {
            name: "piper".into(),
            installed: true,
            voices: Some(vec![Model {
                name: "en_US-joe-medium".into(),
                installed: true,
                ..Model::default()
            }]),
            ..Program::default()
        }],
        ..Info::default()
    }))
}

/// Answers describe, then each synthesize with `rates[i]` audio: a
/// ramp as long as the text in tenths of a second.
fn tts_server(rates: Vec<u32>) -> (Endpoint, JoinHandle<Vec<Vec<Message>>>) {
    serve(1 + rates.len(), move |i, reader, writer| {
        let first = Message::from_event(reader.read_event().unwrap().unwrap()).unwrap();
        if i == 0 {
            assert_eq!(first, Message::Describe);
            send(writer, tts_info());
            return vec![first];
        }
        let format = AudioFormat {
            rate: rates[i - 1],
            width: 2,
            channels: 1,
        };
        send(
            writer,
            Message::AudioStart {
                format,
                timestamp: None,
            },
        );
        let n = format.rate as usize / 10;
        let ramp: Vec<f32> = (0..n).map(|k| k as f32 / n as f32 * 0.5).collect();
        for part in encode_s16le(&ramp).chunks(1000) {
            send(
                writer,
                Message::AudioChunk {
                    format,
                    timestamp: None,
                    audio: part.to_vec(),
                },
            );
        }
        send(writer, Message::AudioStop { timestamp: None });
        vec![first]
    })
}

#[test]
fn a_clause_is_synthesized_by_the_server_at_the_rate_learned_at_connect() {
    let (endpoint, server) = tts_server(vec![22_050, 22_050, 16_000]);
    let mut voice =
        WyomingVoice::connect(endpoint, Some("en_US-joe-medium".into()), quick()).unwrap();
    assert_eq!(voice.sample_rate(), 22_050);
    assert_eq!(voice.synthesize("Hi.").unwrap().len(), 2_205);
    // A voice that changed rate under Hark is resampled to the old one.
    let audio = voice.synthesize("Hi.").unwrap();
    assert!((2_204..=2_206).contains(&audio.len()), "{}", audio.len());
    assert!((audio[1_000] - 0.5 * 1_000.0 / 2_205.0).abs() < 0.01);
    let seen = server.join().unwrap();
    assert_eq!(
        seen[2][0],
        Message::Synthesize {
            text: "Hi.".into(),
            voice: Some(VoiceChoice {
                name: Some("en_US-joe-medium".into()),
                ..VoiceChoice::default()
            })
        }
    );
}

#[test]
fn a_server_without_speech_is_refused_at_connect() {
    let (endpoint, server) = serve(1, |_, reader, writer| {
        reader.read_event().unwrap();
        send(writer, Message::Info(Box::default()));
        Vec::new()
    });
    let err = WyomingVoice::connect(endpoint, None, quick())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no text to speech"), "{err}");
    server.join().unwrap();
    // An event of a kind Hark does not know is passed over, not an error.
    let mut decoder = crate::codec::Decoder::default();
    decoder.feed(&Event::new("future-thing").encode());
    let event = decoder.next_event().unwrap().unwrap();
    assert!(matches!(
        Message::from_event(event).unwrap(),
        Message::Other(_)
    ));
}
