//! Mutation fuzzing of every parser of outside bytes Hark has: WAV files,
//! `OpenAudioInput` format strings and its Opus and LC3 packet streams
//! (framing and decoders, cut anywhere), the configuration file
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
    use hark_audio::stream::{StreamFormat, StreamSource};
    let seeds: Vec<Vec<u8>> = [
        "s16le",
        "s16le:48000:2",
        "f32le:44100",
        "f32le:16000:1",
        "s16le:8000",
        "opus:48000",
        "opus",
        "lc3:16000:7500",
        "lc3:48000",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("format", &seeds, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(format) = text.parse::<StreamFormat>() {
            // A format that parses can be streamed, and reads back the
            // same (the stream's own garbage and half frames are the
            // targets below and tests of `hark_audio::stream`; it runs in
            // real time).
            assert_eq!(format.to_string().parse::<StreamFormat>().unwrap(), format);
            StreamSource::new(std::io::empty(), format, 320, "fuzz")
                .unwrap_or_else(|e| panic!("{format} parsed but cannot be streamed: {e}"));
        }
    });
}

/// Decodes `bytes` with a fresh decoder for `format`, once whole and once
/// cut at random places, as socket reads cut it: both must give the same
/// samples, all finite and within full scale, and no more of them than
/// `most_per_byte` per byte of input (a length field is not believed).
fn decode_split_anywhere(rng: &mut Rng, format: &str, bytes: &[u8], most_per_byte: usize) {
    let decoder = || hark_audio::codec::decoder(format.parse().unwrap()).unwrap();
    let mut whole = Vec::new();
    decoder().decode(bytes, &mut whole);
    let mut split = Vec::new();
    let mut cut = decoder();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len());
        let (now, later) = rest.split_at(n);
        cut.decode(now, &mut split);
        rest = later;
    }
    assert!(whole == split, "{format}: the cuts changed the samples");
    assert!(
        whole.iter().all(|s| s.is_finite() && s.abs() <= 1.0),
        "{format}: a sample out of range"
    );
    assert!(
        whole.len() <= bytes.len() * most_per_byte,
        "{format}: {} samples from {} bytes",
        whole.len(),
        bytes.len()
    );
}

#[test]
fn pcm_streams() {
    // The first byte picks the format, as for LC3 below.
    const FORMATS: [&str; 3] = ["s16le:16000:1", "f32le:48000:2", "s16le:44100:3"];
    let seeds: Vec<Vec<u8>> = (0..FORMATS.len())
        .map(|i| {
            let mut seed = vec![i as u8];
            seed.extend(hark_audio::stream::to_s16le(&sweep(16_000, 0.01)));
            seed
        })
        .collect();
    let mut rng = Rng(19);
    fuzz("pcm", &seeds, |bytes| {
        if let Some((&which, stream)) = bytes.split_first() {
            let format = FORMATS[usize::from(which) % FORMATS.len()];
            decode_split_anywhere(&mut rng, format, stream, 1);
        }
    });
}

/// A short voice-like sweep at `rate`.
fn sweep(rate: u32, seconds: f32) -> Vec<f32> {
    (0..(rate as f32 * seconds) as usize)
        .map(|i| {
            let t = i as f32 / rate as f32;
            0.5 * (2.0 * std::f32::consts::PI * (150.0 + 900.0 * t) * t).sin()
        })
        .collect()
}

#[test]
fn opus_streams() {
    use hark_audio::codec::framing::length_prefixed;
    use hark_audio::codec::opus::encode;
    let audio = sweep(16_000, 0.12);
    let plain = encode(&audio, 20.0, 24_000, None).unwrap();
    let with_fec = encode(&audio, 20.0, 16_000, Some(10)).unwrap();
    let long = encode(&audio, 60.0, 32_000, None).unwrap();
    let short = encode(&audio[..800], 10.0, 24_000, None).unwrap();
    let mut gappy = plain.clone();
    gappy[2].clear();
    let mut absurd = length_prefixed(&plain[..2]);
    absurd.extend(0xfff0u16.to_le_bytes());
    absurd.extend(length_prefixed(&plain[2..]));
    let seeds = vec![
        length_prefixed(&plain),
        length_prefixed(&with_fec),
        length_prefixed(&long),
        length_prefixed(&short),
        length_prefixed(&gappy),
        absurd,
    ];
    let mut rng = Rng(13);
    // Each length field (two bytes) stands for at most a packet and a
    // concealed one: 120 ms twice at 16 kHz, 1920 samples a byte.
    fuzz("opus", &seeds, |bytes| {
        decode_split_anywhere(&mut rng, "opus:16000", bytes, 1920)
    });
}

/// LC3 configurations the target decodes as, chosen by an input's first
/// byte so that mutations also try a stream under the wrong one.
const LC3_FORMATS: [(&str, u32, u32); 4] = [
    ("lc3:16000:10000", 16_000, 10_000),
    ("lc3:48000:7500", 48_000, 7_500),
    ("lc3:8000:10000", 8_000, 10_000),
    ("lc3:24000:7500", 24_000, 7_500),
];

#[test]
fn lc3_streams() {
    use hark_audio::codec::framing::length_prefixed;
    use hark_audio::codec::lc3::Lc3Encoder;
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for (i, &(_, rate, frame_us)) in LC3_FORMATS.iter().enumerate() {
        for frame_bytes in [20, 40, 120] {
            let frames = Lc3Encoder::new(rate, frame_us, frame_bytes)
                .unwrap()
                .encode(&sweep(rate, 0.06));
            let mut seed = vec![i as u8];
            seed.extend(length_prefixed(&frames));
            seeds.push(seed);
        }
    }
    let mut gappy = seeds[1].clone();
    gappy.extend(length_prefixed([&[][..], &[1, 2, 3][..], &[0xff; 400][..]]));
    gappy.extend(401u16.to_le_bytes());
    seeds.push(gappy);
    let mut rng = Rng(17);
    fuzz("lc3", &seeds, |bytes| {
        let Some((&which, stream)) = bytes.split_first() else {
            return;
        };
        let (format, rate, frame_us) = LC3_FORMATS[usize::from(which) % LC3_FORMATS.len()];
        // At most a frame per length field (two bytes).
        let frame = (rate as u64 * u64::from(frame_us) / 1_000_000) as usize;
        decode_split_anywhere(&mut rng, format, stream, frame.div_ceil(2));
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
