//! The events Hark sends and understands, typed. Field names follow the
//! Python `wyoming` package; fields Hark does not use are kept in
//! [`Event::data`] by whoever needs them, and unknown event types come
//! through as [`Message::Other`] so a newer peer does not break an older
//! Hark.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::codec::Event;
use crate::WyomingError;

/// PCM as Wyoming describes it: little-endian signed integers of `width`
/// bytes, `channels` interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioFormat {
    pub rate: u32,
    pub width: u32,
    pub channels: u32,
}

impl AudioFormat {
    /// What Hark hears in: 16 kHz, 16-bit, mono.
    pub const HARK_INPUT: AudioFormat = AudioFormat {
        rate: 16_000,
        width: 2,
        channels: 1,
    };

    /// Checks that Hark can decode it: 1 to 4 bytes a sample, 1 to 8
    /// channels, 1 kHz to 384 kHz.
    pub fn check(&self) -> Result<(), WyomingError> {
        if !(1..=4).contains(&self.width)
            || !(1..=8).contains(&self.channels)
            || !(1_000..=384_000).contains(&self.rate)
        {
            return Err(WyomingError::Protocol(format!(
                "unsupported audio format: rate {} Hz, width {} bytes, {} channels",
                self.rate, self.width, self.channels
            )));
        }
        Ok(())
    }

    /// Mono f32 samples in -1..1 from `bytes` in this format (channels
    /// averaged; a trailing partial frame dropped).
    pub fn decode(&self, bytes: &[u8]) -> Vec<f32> {
        let width = self.width as usize;
        let frame = width * self.channels as usize;
        if frame == 0 {
            return Vec::new();
        }
        let scale = 1.0 / (1u64 << (8 * width - 1)) as f32;
        bytes
            .chunks_exact(frame)
            .map(|frame| {
                let sum: f32 = frame
                    .chunks_exact(width)
                    .map(|sample| {
                        // Sign-extend a little-endian integer of `width` bytes.
                        let mut value: i32 = 0;
                        for (i, &b) in sample.iter().enumerate() {
                            value |= (b as i32) << (8 * i);
                        }
                        let shift = 32 - 8 * width as u32;
                        if width == 1 {
                            // 8-bit PCM is unsigned.
                            (value - 128) as f32 * scale
                        } else {
                            ((value << shift) >> shift) as f32 * scale
                        }
                    })
                    .sum();
                sum / self.channels as f32
            })
            .collect()
    }
}

/// 16-bit little-endian PCM from samples in -1..1 (Hark's stream
/// encoding, shared).
pub use hark_audio::stream::to_s16le as encode_s16le;

/// Who made a program or model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attribution {
    pub name: String,
    pub url: String,
}

/// A model of an ASR or wake program, or a voice of a TTS program.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Model {
    pub name: String,
    pub attribution: Attribution,
    pub installed: bool,
    pub description: Option<String>,
    pub version: Option<String>,
    pub languages: Vec<String>,
    /// Wake models: the phrase said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phrase: Option<String>,
    /// TTS voices: their speakers, if several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speakers: Option<Vec<Speaker>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Speaker {
    pub name: String,
}

/// A service a server offers (ASR, TTS, wake).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Program {
    pub name: String,
    pub attribution: Attribution,
    pub installed: bool,
    pub description: Option<String>,
    pub version: Option<String>,
    /// ASR and wake programs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<Model>>,
    /// TTS programs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voices: Option<Vec<Model>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supports_transcript_streaming: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supports_synthesize_streaming: Option<bool>,
}

/// A satellite's description of itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Satellite {
    pub name: String,
    pub attribution: Attribution,
    pub installed: bool,
    pub description: Option<String>,
    pub version: Option<String>,
    pub area: Option<String>,
    pub has_vad: Option<bool>,
    pub active_wake_words: Option<Vec<String>>,
    pub max_active_wake_words: Option<u32>,
    pub supports_trigger: Option<bool>,
}

/// The answer to `describe`: what a server offers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Info {
    pub asr: Vec<Program>,
    pub tts: Vec<Program>,
    pub handle: Vec<Program>,
    pub intent: Vec<Program>,
    pub wake: Vec<Program>,
    pub mic: Vec<Value>,
    pub snd: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub satellite: Option<Satellite>,
}

/// A voice asked for by name (and optionally language and speaker).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VoiceChoice {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

/// The events of the protocol Hark speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Describe,
    Info(Box<Info>),
    /// Start of an utterance to transcribe, with the model and language
    /// wanted.
    Transcribe {
        name: Option<String>,
        language: Option<String>,
    },
    AudioStart {
        format: AudioFormat,
        timestamp: Option<u64>,
    },
    AudioChunk {
        format: AudioFormat,
        timestamp: Option<u64>,
        audio: Vec<u8>,
    },
    AudioStop {
        timestamp: Option<u64>,
    },
    Transcript {
        text: String,
        language: Option<String>,
    },
    TranscriptStart {
        language: Option<String>,
    },
    TranscriptChunk {
        text: String,
    },
    TranscriptStop,
    Synthesize {
        text: String,
        voice: Option<VoiceChoice>,
    },
    SynthesizeStart {
        voice: Option<VoiceChoice>,
    },
    SynthesizeChunk {
        text: String,
    },
    SynthesizeStop,
    SynthesizeStopped,
    Detect {
        names: Option<Vec<String>>,
    },
    Detection {
        name: Option<String>,
        timestamp: Option<u64>,
    },
    NotDetected,
    RunSatellite,
    PauseSatellite,
    RunPipeline {
        start_stage: String,
        end_stage: String,
        restart_on_end: bool,
    },
    VoiceStarted {
        timestamp: Option<u64>,
    },
    VoiceStopped {
        timestamp: Option<u64>,
    },
    Played,
    Error {
        text: String,
        code: Option<String>,
    },
    Ping {
        text: Option<String>,
    },
    Pong {
        text: Option<String>,
    },
    /// Any other event, passed through untouched.
    Other(Event),
}

fn field<T: for<'de> Deserialize<'de>>(
    event: &Event,
    key: &str,
) -> Result<Option<T>, WyomingError> {
    match event.data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| {
                WyomingError::Protocol(format!(
                    "the '{}' event's {key} is malformed: {e}",
                    event.kind
                ))
            }),
    }
}

fn required<T: for<'de> Deserialize<'de>>(event: &Event, key: &str) -> Result<T, WyomingError> {
    field(event, key)?
        .ok_or_else(|| WyomingError::Protocol(format!("the '{}' event has no {key}", event.kind)))
}

fn format_of(event: &Event) -> Result<AudioFormat, WyomingError> {
    let format = AudioFormat {
        rate: required(event, "rate")?,
        width: required(event, "width")?,
        channels: required(event, "channels")?,
    };
    format.check()?;
    Ok(format)
}

impl Message {
    /// The typed form of `event`; malformed fields of a known type are an
    /// error naming the event and the field.
    pub fn from_event(event: Event) -> Result<Message, WyomingError> {
        let e = &event;
        Ok(match e.kind.as_str() {
            "describe" => Message::Describe,
            "info" => Message::Info(Box::new(
                serde_json::from_value(Value::Object(e.data.clone())).map_err(|err| {
                    WyomingError::Protocol(format!("the 'info' event is malformed: {err}"))
                })?,
            )),
            "transcribe" => Message::Transcribe {
                name: field(e, "name")?,
                language: field(e, "language")?,
            },
            "audio-start" => Message::AudioStart {
                format: format_of(e)?,
                timestamp: field(e, "timestamp")?,
            },
            "audio-chunk" => {
                let format = format_of(e)?;
                let timestamp = field(e, "timestamp")?;
                Message::AudioChunk {
                    format,
                    timestamp,
                    audio: event.payload,
                }
            }
            "audio-stop" => Message::AudioStop {
                timestamp: field(e, "timestamp")?,
            },
            "transcript" => Message::Transcript {
                text: required(e, "text")?,
                language: field(e, "language")?,
            },
            "transcript-start" => Message::TranscriptStart {
                language: field(e, "language")?,
            },
            "transcript-chunk" => Message::TranscriptChunk {
                text: required(e, "text")?,
            },
            "transcript-stop" => Message::TranscriptStop,
            "synthesize" => Message::Synthesize {
                text: required(e, "text")?,
                voice: field(e, "voice")?,
            },
            "synthesize-start" => Message::SynthesizeStart {
                voice: field(e, "voice")?,
            },
            "synthesize-chunk" => Message::SynthesizeChunk {
                text: required(e, "text")?,
            },
            "synthesize-stop" => Message::SynthesizeStop,
            "synthesize-stopped" => Message::SynthesizeStopped,
            "detect" => Message::Detect {
                names: field(e, "names")?,
            },
            "detection" => Message::Detection {
                name: field(e, "name")?,
                timestamp: field(e, "timestamp")?,
            },
            "not-detected" => Message::NotDetected,
            "run-satellite" => Message::RunSatellite,
            "pause-satellite" => Message::PauseSatellite,
            "run-pipeline" => Message::RunPipeline {
                start_stage: required(e, "start_stage")?,
                end_stage: required(e, "end_stage")?,
                restart_on_end: field(e, "restart_on_end")?.unwrap_or(false),
            },
            "voice-started" => Message::VoiceStarted {
                timestamp: field(e, "timestamp")?,
            },
            "voice-stopped" => Message::VoiceStopped {
                timestamp: field(e, "timestamp")?,
            },
            "played" => Message::Played,
            "error" => Message::Error {
                text: required(e, "text")?,
                code: field(e, "code")?,
            },
            "ping" => Message::Ping {
                text: field(e, "text")?,
            },
            "pong" => Message::Pong {
                text: field(e, "text")?,
            },
            _ => Message::Other(event),
        })
    }

    /// The event on its way out.
    pub fn to_event(&self) -> Event {
        let mut data = Map::new();
        let mut put = |key: &str, value: Value| {
            if !value.is_null() {
                data.insert(key.to_owned(), value);
            }
        };
        let put_format = |put: &mut dyn FnMut(&str, Value), f: &AudioFormat| {
            put("rate", f.rate.into());
            put("width", f.width.into());
            put("channels", f.channels.into());
        };
        let mut payload = Vec::new();
        let kind = match self {
            Message::Describe => "describe",
            Message::Info(info) => {
                if let Value::Object(map) =
                    serde_json::to_value(info).expect("Info always serializes")
                {
                    for (key, value) in map {
                        put(&key, value);
                    }
                }
                "info"
            }
            Message::Transcribe { name, language } => {
                put("name", name.clone().into());
                put("language", language.clone().into());
                "transcribe"
            }
            Message::AudioStart { format, timestamp } => {
                put_format(&mut put, format);
                put("timestamp", (*timestamp).into());
                "audio-start"
            }
            Message::AudioChunk {
                format,
                timestamp,
                audio,
            } => {
                put_format(&mut put, format);
                put("timestamp", (*timestamp).into());
                payload = audio.clone();
                "audio-chunk"
            }
            Message::AudioStop { timestamp } => {
                put("timestamp", (*timestamp).into());
                "audio-stop"
            }
            Message::Transcript { text, language } => {
                put("text", text.clone().into());
                put("language", language.clone().into());
                "transcript"
            }
            Message::TranscriptStart { language } => {
                put("language", language.clone().into());
                "transcript-start"
            }
            Message::TranscriptChunk { text } => {
                put("text", text.clone().into());
                "transcript-chunk"
            }
            Message::TranscriptStop => "transcript-stop",
            Message::Synthesize { text, voice } => {
                put("text", text.clone().into());
                put("voice", serde_json::to_value(voice).expect("serializes"));
                "synthesize"
            }
            Message::SynthesizeStart { voice } => {
                put("voice", serde_json::to_value(voice).expect("serializes"));
                "synthesize-start"
            }
            Message::SynthesizeChunk { text } => {
                put("text", text.clone().into());
                "synthesize-chunk"
            }
            Message::SynthesizeStop => "synthesize-stop",
            Message::SynthesizeStopped => "synthesize-stopped",
            Message::Detect { names } => {
                put("names", serde_json::to_value(names).expect("serializes"));
                "detect"
            }
            Message::Detection { name, timestamp } => {
                put("name", name.clone().into());
                put("timestamp", (*timestamp).into());
                "detection"
            }
            Message::NotDetected => "not-detected",
            Message::RunSatellite => "run-satellite",
            Message::PauseSatellite => "pause-satellite",
            Message::RunPipeline {
                start_stage,
                end_stage,
                restart_on_end,
            } => {
                put("start_stage", start_stage.clone().into());
                put("end_stage", end_stage.clone().into());
                put("restart_on_end", (*restart_on_end).into());
                "run-pipeline"
            }
            Message::VoiceStarted { timestamp } => {
                put("timestamp", (*timestamp).into());
                "voice-started"
            }
            Message::VoiceStopped { timestamp } => {
                put("timestamp", (*timestamp).into());
                "voice-stopped"
            }
            Message::Played => "played",
            Message::Error { text, code } => {
                put("text", text.clone().into());
                put("code", code.clone().into());
                "error"
            }
            Message::Ping { text } => {
                put("text", text.clone().into());
                "ping"
            }
            Message::Pong { text } => {
                put("text", text.clone().into());
                "pong"
            }
            Message::Other(event) => return event.clone(),
        };
        Event {
            kind: kind.to_owned(),
            data,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Decoder;
    use serde_json::json;

    fn every_message() -> Vec<Message> {
        let format = AudioFormat::HARK_INPUT;
        let voice = Some(VoiceChoice {
            name: Some("en_US-joe-medium".into()),
            ..VoiceChoice::default()
        });
        vec![
            Message::Describe,
            Message::Info(Box::new(Info {
                asr: vec![Program {
                    name: "hark-whisper".into(),
                    installed: true,
                    models: Some(vec![Model {
                        name: "tiny.en".into(),
                        languages: vec!["en".into()],
                        installed: true,
                        ..Model::default()
                    }]),
                    supports_transcript_streaming: Some(false),
                    ..Program::default()
                }],
                ..Info::default()
            })),
            Message::Transcribe {
                name: None,
                language: Some("en".into()),
            },
            Message::AudioStart {
                format,
                timestamp: Some(0),
            },
            Message::AudioChunk {
                format,
                timestamp: None,
                audio: vec![0, 1, 2, 3],
            },
            Message::AudioStop { timestamp: None },
            Message::Transcript {
                text: "What is the moon made of?".into(),
                language: None,
            },
            Message::TranscriptStart { language: None },
            Message::TranscriptChunk {
                text: "What".into(),
            },
            Message::TranscriptStop,
            Message::Synthesize {
                text: "Hello.".into(),
                voice: voice.clone(),
            },
            Message::SynthesizeStart { voice },
            Message::SynthesizeChunk { text: "Hel".into() },
            Message::SynthesizeStop,
            Message::SynthesizeStopped,
            Message::Detect {
                names: Some(vec!["hey_jarvis".into()]),
            },
            Message::Detection {
                name: Some("hey_jarvis".into()),
                timestamp: Some(1200),
            },
            Message::NotDetected,
            Message::RunSatellite,
            Message::PauseSatellite,
            Message::RunPipeline {
                start_stage: "asr".into(),
                end_stage: "tts".into(),
                restart_on_end: false,
            },
            Message::VoiceStarted {
                timestamp: Some(10),
            },
            Message::VoiceStopped { timestamp: None },
            Message::Played,
            Message::Error {
                text: "boom".into(),
                code: Some("x".into()),
            },
            Message::Ping { text: None },
            Message::Pong {
                text: Some("hi".into()),
            },
            Message::Other(Event::new("future-event")),
        ]
    }

    #[test]
    fn every_event_round_trips_through_the_wire() {
        for message in every_message() {
            let wire = message.to_event().encode();
            let mut decoder = Decoder::default();
            decoder.feed(&wire);
            let event = decoder.next_event().unwrap().unwrap();
            assert_eq!(Message::from_event(event).unwrap(), message);
        }
    }

    #[test]
    fn malformed_fields_name_the_event_and_the_field() {
        let mut event = Event::new("audio-start");
        event.data.insert("rate".into(), json!("fast"));
        let err = Message::from_event(event).unwrap_err().to_string();
        assert!(
            err.contains("'audio-start'") && err.contains("rate"),
            "{err}"
        );
        let err = Message::from_event(Event::new("transcript")).unwrap_err();
        assert!(err.to_string().contains("no text"), "{err}");
        let mut event = Event::new("audio-chunk");
        for (k, v) in [("rate", 16000), ("width", 9), ("channels", 1)] {
            event.data.insert(k.into(), json!(v));
        }
        let err = Message::from_event(event).unwrap_err().to_string();
        assert!(err.contains("width 9"), "{err}");
    }

    #[test]
    fn pcm_of_every_width_decodes_to_mono_floats() {
        let f = |width, channels| AudioFormat {
            rate: 16000,
            width,
            channels,
        };
        assert_eq!(f(2, 1).decode(&[0x00, 0x40, 0x00, 0xc0]), vec![0.5, -0.5]);
        assert_eq!(f(2, 2).decode(&[0x00, 0x40, 0x00, 0xc0, 1]), vec![0.0]);
        assert_eq!(f(1, 1).decode(&[128, 192]), vec![0.0, 0.5]);
        assert_eq!(f(4, 1).decode(&[0, 0, 0, 0x40]), vec![0.5]);
        assert_eq!(f(3, 1).decode(&[0, 0, 0xc0]), vec![-0.5]);
        let samples = [0.25, -1.0, 0.999];
        let back = f(2, 1).decode(&encode_s16le(&samples));
        for (a, b) in samples.iter().zip(back) {
            assert!((a - b).abs() < 1e-4, "{a} {b}");
        }
    }
}
