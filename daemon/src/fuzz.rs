//! Mutation fuzzing of every parser of outside bytes Hark has: WAV files,
//! `OpenAudioInput` format strings and PCM streams, the configuration file
//! and `--set`, the SSE stream of an OpenAI-compatible server, and the
//! Wyoming protocol's event stream.
//!
//! Each target starts from valid inputs and feeds `HARK_FUZZ_CASES`
//! (default 100,000) seeded mutations of them through the real parser: any
//! answer is fine, a panic is not, and neither is memory out of proportion
//! to the input (a header's claimed length must not be believed). A
//! failure prints the seed and the input, so it can be replayed.
//!
//! `cargo test --release -p hark --bin hark fuzz::` is the fuzz command;
//! the test suite runs it too.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Cases per target, `HARK_FUZZ_CASES` or 100,000.
fn cases() -> u64 {
    std::env::var("HARK_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

/// xorshift64*: tiny, seeded, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that break length and rate fields.
const AWKWARD_U32: [u32; 9] = [
    0,
    1,
    2,
    0x7f,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

/// One to eight random edits of `seed`, sometimes spliced with `other`.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = bytes.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                bytes[i] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let extra: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, extra);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                bytes.drain(at..end);
            }
            4 => bytes.truncate(rng.below(len + 1)),
            5 if len >= 4 => {
                let at = rng.below(len - 3);
                let value = AWKWARD_U32[rng.below(AWKWARD_U32.len())];
                bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            6 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(64)).min(len);
                let copy = bytes[at..end].to_vec();
                let to = rng.below(len + 1);
                bytes.splice(to..to, copy);
            }
            7 if !other.is_empty() => {
                let cut = rng.below(bytes.len() + 1);
                let from = rng.below(other.len());
                bytes.truncate(cut);
                bytes.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    bytes
}

/// Runs `target` on `cases()` mutations of `seeds`; fails with the seed
/// and input of the first panic.
fn fuzz(name: &str, seeds: &[Vec<u8>], mut target: impl FnMut(&[u8])) {
    let cases = cases();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    for case in 0..cases {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = if case < seeds.len() as u64 {
            seeds[case as usize].clone()
        } else {
            mutate(&mut rng, seed, other)
        };
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            panic!(
                "{name}: case {case} of {cases} panicked on {} bytes: {:?}",
                input.len(),
                String::from_utf8_lossy(&input)
            );
        }
    }
    eprintln!("{name}: {cases} cases, no panic");
}

fn wav_bytes(rate: u32, format: hark_audio::wav::WavSampleFormat, seconds: f32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.wav");
    let mut sink = hark_audio::wav::WavSink::create(&path, rate, format).unwrap();
    let samples: Vec<f32> = (0..(rate as f32 * seconds) as usize)
        .map(|i| (i as f32 * 0.05).sin() * 0.5)
        .collect();
    sink.write(&samples).unwrap();
    sink.finalize().unwrap();
    std::fs::read(path).unwrap()
}

/// `wav` with its data chunk claiming 2 GiB.
fn huge_header(mut wav: Vec<u8>) -> Vec<u8> {
    let at = wav.windows(4).position(|w| w == b"data").unwrap() + 4;
    wav[at..at + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    wav
}

#[test]
fn wav_files() {
    use hark_audio::wav::WavSampleFormat;
    let seeds = vec![
        wav_bytes(16_000, WavSampleFormat::Int16, 0.05),
        wav_bytes(44_100, WavSampleFormat::Float32, 0.02),
        wav_bytes(8_000, WavSampleFormat::Int16, 0.0),
        huge_header(wav_bytes(8_000, WavSampleFormat::Int16, 0.1)),
    ];
    // tmpfs where there is one: the file is rewritten every case.
    let dir = tempfile::Builder::new()
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .unwrap();
    let path = dir.path().join("case.wav");
    fuzz("wav", &seeds, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        if let Ok(samples) = hark_audio::wav::read_wav_16k_mono(&path) {
            // Whatever the header claims, no more than the bytes hold
            // (one byte a sample at 8 kHz, doubled to 16 kHz, at most).
            // What was reserved, too: a header's claim is not believed.
            assert!(
                samples.capacity() <= bytes.len() * 2 * 16_000 / 8_000 + 16,
                "{} samples reserved from {} bytes",
                samples.capacity(),
                bytes.len()
            );
        }
        // The streaming reader `--input` uses must agree it is readable.
        let _ =
            hark_audio::wav::WavSource::open(&path, 320, hark_audio::wav::Pacing::AsFastAsPossible);
    });
}

#[test]
fn audio_input_formats_and_streams() {
    use hark_audio::stream::{PcmFormat, PcmStreamSource};
    let seeds: Vec<Vec<u8>> = [
        "s16le",
        "s16le:48000:2",
        "f32le:44100",
        "f32le:16000:1",
        "s16le:8000",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("format", &seeds, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(format) = text.parse::<PcmFormat>() {
            // A format that parses can be streamed (the stream's own
            // garbage and half frames are tests of `hark_audio::stream`;
            // it runs in real time).
            assert!(format.frame_bytes() > 0, "{format}");
            PcmStreamSource::new(std::io::empty(), format, 320, "fuzz")
                .unwrap_or_else(|e| panic!("{format} parsed but cannot be streamed: {e}"));
        }
    });
}

#[test]
fn sse_streams() {
    let seeds: Vec<Vec<u8>> = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n: ping\n\ndata: [DONE]\n\n",
        "data: a\r\ndata: b\r\n\r\nevent: x\nid: 3\nretry: 10\n\n",
        "data:{\"error\":{\"message\":\"boom\"}}\n\n",
        ": ping\n: ping\ndata: é\n\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let mut rng = Rng(7);
    fuzz("sse", &seeds, |bytes| {
        let mut parser = hark_openai::sse::SseParser::default();
        // Split across reads anywhere, as the network does.
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len());
            let (now, later) = rest.split_at(n);
            for event in parser.push(now) {
                // Invalid UTF-8 becomes U+FFFD (3 bytes); nothing more.
                assert!(event.len() <= 3 * bytes.len());
            }
            rest = later;
        }
        let _ = parser.finish();
    });
}

#[test]
fn wyoming_streams() {
    use hark_wyoming::message::{AudioFormat, Message, VoiceChoice};
    let format = AudioFormat::HARK_INPUT;
    let seeds: Vec<Vec<u8>> = [
        Message::Describe,
        Message::Transcribe {
            name: None,
            language: Some("en".into()),
        },
        Message::AudioChunk {
            format,
            timestamp: Some(0),
            audio: vec![0, 1, 2, 3, 4, 5],
        },
        Message::Transcript {
            text: "ask not".into(),
            language: None,
        },
        Message::Synthesize {
            text: "Hello.".into(),
            voice: Some(VoiceChoice {
                name: Some("en_US-joe-medium".into()),
                ..VoiceChoice::default()
            }),
        },
        Message::RunPipeline {
            start_stage: "wake".into(),
            end_stage: "tts".into(),
            restart_on_end: false,
        },
    ]
    .iter()
    .map(|m| m.to_event().encode())
    .chain([b"{\"type\":\"info\",\"data\":{\"asr\":[{\"name\":\"x\",\"models\":[]}]}}\n".to_vec()])
    .collect();
    let mut rng = Rng(11);
    fuzz("wyoming", &seeds, |bytes| {
        let mut decoder = hark_wyoming::Decoder::default();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len());
            let (now, later) = rest.split_at(n);
            decoder.feed(now);
            loop {
                match decoder.next_event() {
                    Ok(Some(event)) => {
                        assert!(event.payload.len() <= bytes.len());
                        let _ = Message::from_event(event);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            rest = later;
        }
    });
}

#[test]
fn configuration_files_and_overrides() {
    let seeds = vec![
        crate::config::default_config_text().into_bytes(),
        b"[llm]\nbackend = \"openai\"\nurl = \"http://127.0.0.1:8080/v1\"\n\n[turn]\ndetector = \"smart\"\nthreshold = 0.5\n".to_vec(),
        b"[vad]\naggressiveness = 2\n[audio]\necho_tail_ms = 200\n".to_vec(),
    ];
    fuzz("config", &seeds, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        match hark_config::parse::<crate::config::HarkConfig>(&text, "fuzz.toml") {
            Ok(_) => {}
            // Every refusal says where.
            Err(e) => assert!(e.to_string().contains("fuzz.toml"), "{e}"),
        }
    });
    let seeds: Vec<Vec<u8>> = [
        "turn.threshold=0.7",
        "llm.backend=openai",
        "vad.aggressiveness=3",
        "stt.beam_size=1",
        "daemon.mode=push-to-talk",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("set", &seeds, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(set) = text.parse::<hark_config::Override>() {
            let _ = hark_config::with_overrides(crate::config::HarkConfig::default(), &[set]);
        }
    });
}
