//! Piper voice configuration: the `<voice>.onnx.json` file that ships next to
//! every Piper `.onnx` model.
//!
//! Only the fields the runtime needs are kept; everything else in the file
//! (dataset, language names, piper_version, ...) is ignored so that newer or
//! older Piper exports keep loading.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::TtsError;

/// Piper's documented defaults, used when a config has no `inference` block.
const DEFAULT_NOISE_SCALE: f32 = 0.667;
const DEFAULT_LENGTH_SCALE: f32 = 1.0;
const DEFAULT_NOISE_W: f32 = 0.8;

/// Symbols Piper reserves in every phoneme id map; without them the id
/// sequence cannot be framed (see [`crate::phoneme_ids`]).
pub(crate) const PAD: &str = "_";
pub(crate) const BOS: &str = "^";
pub(crate) const EOS: &str = "$";

/// The parts of a Piper voice's `.onnx.json` that synthesis depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceConfig {
    /// Output sample rate of the model, in Hz (22050 for "medium" voices).
    pub sample_rate: u32,
    /// espeak-ng voice used to phonemize text for this model, e.g. "en-us".
    pub espeak_voice: String,
    /// Phoneme (one Unicode scalar, as a string) → model input ids.
    pub phoneme_id_map: HashMap<String, Vec<i64>>,
    /// VITS prior noise; higher is more expressive but less stable.
    pub noise_scale: f32,
    /// Phoneme duration multiplier; >1 speaks slower.
    pub length_scale: f32,
    /// Duration predictor noise.
    pub noise_w: f32,
    /// Speakers in the model; >1 means the graph expects a `sid` input.
    pub num_speakers: u32,
}

#[derive(Deserialize)]
struct RawConfig {
    audio: RawAudio,
    espeak: Option<RawEspeak>,
    inference: Option<RawInference>,
    phoneme_type: Option<String>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    num_speakers: Option<u32>,
}

#[derive(Deserialize)]
struct RawAudio {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct RawEspeak {
    voice: String,
}

#[derive(Deserialize)]
struct RawInference {
    noise_scale: Option<f32>,
    length_scale: Option<f32>,
    noise_w: Option<f32>,
}

impl VoiceConfig {
    /// Parses the JSON text of a Piper voice config. The error string is
    /// meant to be wrapped with the file name by the caller.
    pub fn from_json_str(json: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;

        // "text" voices map raw characters to ids and would need a different
        // front end; only espeak phonemes are wired up here.
        if let Some(kind) = raw.phoneme_type.as_deref() {
            if kind != "espeak" {
                return Err(format!(
                    "phoneme_type {kind:?} is not supported (only \"espeak\")"
                ));
            }
        }
        let espeak_voice = raw
            .espeak
            .map(|e| e.voice)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| "missing espeak.voice".to_string())?;
        if raw.audio.sample_rate == 0 {
            return Err("audio.sample_rate is 0".into());
        }
        for reserved in [PAD, BOS, EOS] {
            if raw
                .phoneme_id_map
                .get(reserved)
                .is_none_or(|ids| ids.is_empty())
            {
                return Err(format!("phoneme_id_map has no id for {reserved:?}"));
            }
        }
        let inference = raw.inference.unwrap_or(RawInference {
            noise_scale: None,
            length_scale: None,
            noise_w: None,
        });
        Ok(Self {
            sample_rate: raw.audio.sample_rate,
            espeak_voice,
            phoneme_id_map: raw.phoneme_id_map,
            noise_scale: inference.noise_scale.unwrap_or(DEFAULT_NOISE_SCALE),
            length_scale: inference.length_scale.unwrap_or(DEFAULT_LENGTH_SCALE),
            noise_w: inference.noise_w.unwrap_or(DEFAULT_NOISE_W),
            num_speakers: raw.num_speakers.unwrap_or(1),
        })
    }

    /// Reads and parses a `.onnx.json` file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self, TtsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TtsError::ConfigMissing {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => {
                return Err(TtsError::ConfigInvalid {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            }
        };
        Self::from_json_str(&text).map_err(|message| TtsError::ConfigInvalid {
            path: path.to_path_buf(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{
        "audio": {"sample_rate": 22050, "quality": "medium"},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.5, "length_scale": 1.1, "noise_w": 0.7},
        "phoneme_type": "espeak",
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], "a": [14]},
        "num_speakers": 1,
        "language": {"code": "en_US"}
    }"#;

    #[test]
    fn parses_small_config() {
        let c = VoiceConfig::from_json_str(SMALL).unwrap();
        assert_eq!(c.sample_rate, 22050);
        assert_eq!(c.espeak_voice, "en-us");
        assert_eq!(c.noise_scale, 0.5);
        assert_eq!(c.length_scale, 1.1);
        assert_eq!(c.noise_w, 0.7);
        assert_eq!(c.num_speakers, 1);
        assert_eq!(c.phoneme_id_map["a"], vec![14]);
        assert_eq!(c.phoneme_id_map.len(), 5);
    }

    #[test]
    fn inference_defaults() {
        let json = SMALL.replace(
            r#""inference": {"noise_scale": 0.5, "length_scale": 1.1, "noise_w": 0.7},"#,
            "",
        );
        let c = VoiceConfig::from_json_str(&json).unwrap();
        assert_eq!(c.noise_scale, DEFAULT_NOISE_SCALE);
        assert_eq!(c.length_scale, DEFAULT_LENGTH_SCALE);
        assert_eq!(c.noise_w, DEFAULT_NOISE_W);
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(VoiceConfig::from_json_str("{").is_err());
        let no_bos = SMALL.replace(r#""^": [1], "#, "");
        assert!(VoiceConfig::from_json_str(&no_bos)
            .unwrap_err()
            .contains("\"^\""));
        let text = SMALL.replace(r#""phoneme_type": "espeak""#, r#""phoneme_type": "text""#);
        assert!(VoiceConfig::from_json_str(&text)
            .unwrap_err()
            .contains("text"));
    }

    #[test]
    fn missing_and_invalid_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.onnx.json");
        let err = VoiceConfig::from_file(&missing).unwrap_err();
        assert!(matches!(err, TtsError::ConfigMissing { .. }));
        assert!(err.to_string().contains("nope.onnx.json"), "{err}");

        let bad = dir.path().join("bad.onnx.json");
        std::fs::write(&bad, "not json").unwrap();
        let err = VoiceConfig::from_file(&bad).unwrap_err();
        assert!(matches!(err, TtsError::ConfigInvalid { .. }));
        assert!(err.to_string().contains("bad.onnx.json"), "{err}");
    }
}
