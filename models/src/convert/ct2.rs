//! Reader for CTranslate2's `model.bin` (binary version 6).
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! u32 binary_version
//! str spec_name                  (str = u16 length incl. NUL, bytes, NUL)
//! u32 spec_revision
//! u32 n_variables
//! n_variables × { str name, u8 rank, u32 dims[rank], u8 dtype, u32 n_bytes, data }
//! u32 n_aliases
//! n_aliases × { str alias, str target }
//! ```
//!
//! Only the index is read up front (tensor data is skipped with seeks), so
//! opening a multi-gigabyte model costs a few kilobytes of memory; tensor
//! bytes are read later, in chunks, straight from the file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::ConvertError;

/// The only binary version whose layout this reader knows.
pub(crate) const SUPPORTED_BINARY_VERSION: u32 = 6;

/// Guards against reading garbage as a huge count or rank.
const MAX_RANK: u8 = 8;
const MAX_VARIABLES: u32 = 1_000_000;

/// Element types, numbered as in CTranslate2's `DataType` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl Ct2Dtype {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    pub(crate) fn size(self) -> u64 {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
        }
    }
}

/// Where one variable's data lives in the file.
#[derive(Debug, Clone)]
pub(crate) struct Ct2Variable {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: Ct2Dtype,
    pub data_offset: u64,
}

impl Ct2Variable {
    pub(crate) fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// An opened `model.bin`: its header, variable index and the open file.
pub(crate) struct Ct2Model {
    path: PathBuf,
    file: File,
    pub spec_name: String,
    pub spec_revision: u32,
    variables: HashMap<String, Ct2Variable>,
    /// Alias name → the variable it stands for (e.g. a tied projection).
    aliases: HashMap<String, String>,
}

impl Ct2Model {
    /// Opens `path` and reads the header and variable index.
    ///
    /// Checks the binary version but not the spec: callers decide which
    /// specs they understand.
    pub(crate) fn open(path: &Path) -> Result<Self, ConvertError> {
        let file = File::open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ConvertError::MissingFile {
                    path: path.to_owned(),
                }
            } else {
                ConvertError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let file_len = file
            .metadata()
            .map_err(|source| ConvertError::Io {
                path: path.to_owned(),
                source,
            })?
            .len();
        let mut index = IndexReader {
            path,
            reader: BufReader::with_capacity(64 * 1024, &file),
            offset: 0,
            file_len,
        };

        if file_len < 4 {
            return Err(ConvertError::NotCt2 {
                path: path.to_owned(),
                reason: format!("the file is only {file_len} bytes long"),
            });
        }
        let binary_version = index.u32("binary version")?;
        if binary_version != SUPPORTED_BINARY_VERSION {
            // Real CTranslate2 versions are small numbers; anything else is
            // some other kind of file.
            if binary_version == 0 || binary_version > 100 {
                return Err(ConvertError::NotCt2 {
                    path: path.to_owned(),
                    reason: format!(
                        "it starts with {binary_version:#010x}, not a CTranslate2 binary version"
                    ),
                });
            }
            return Err(ConvertError::UnsupportedBinaryVersion {
                path: path.to_owned(),
                version: binary_version,
            });
        }
        let spec_name = index.string("spec name")?;
        let spec_revision = index.u32("spec revision")?;
        let n_variables = index.u32("variable count")?;
        if n_variables > MAX_VARIABLES {
            return Err(index.corrupt(format!("implausible variable count {n_variables}")));
        }

        let mut variables = HashMap::with_capacity(n_variables as usize);
        for _ in 0..n_variables {
            let variable = index.variable()?;
            variables.insert(variable.name.clone(), variable);
        }
        let n_aliases = index.u32("alias count")?;
        if n_aliases > MAX_VARIABLES {
            return Err(index.corrupt(format!("implausible alias count {n_aliases}")));
        }
        let mut aliases = HashMap::with_capacity(n_aliases as usize);
        for _ in 0..n_aliases {
            let alias = index.string("alias name")?;
            let target = index.string("alias target")?;
            aliases.insert(alias, target);
        }
        if index.offset != file_len {
            tracing::warn!(
                path = %path.display(),
                trailing_bytes = file_len - index.offset,
                "CTranslate2 model has trailing bytes after its alias table"
            );
        }
        // The index borrows `file`, which moves into the model below.
        drop(index);

        Ok(Self {
            path: path.to_owned(),
            file,
            spec_name,
            spec_revision,
            variables,
            aliases,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Looks a variable up by name, following aliases.
    pub(crate) fn get(&self, name: &str) -> Option<&Ct2Variable> {
        let mut name = name;
        // Aliases point at variables, but follow a short chain defensively.
        for _ in 0..4 {
            if let Some(variable) = self.variables.get(name) {
                return Some(variable);
            }
            name = self.aliases.get(name)?;
        }
        None
    }

    /// Like [`get`](Self::get), but a missing variable is an error.
    pub(crate) fn variable(&self, name: &str) -> Result<&Ct2Variable, ConvertError> {
        self.get(name).ok_or_else(|| ConvertError::MissingTensor {
            path: self.path.clone(),
            name: name.to_owned(),
        })
    }

    /// The name a variable or alias finally resolves to.
    pub(crate) fn resolved_name(&self, name: &str) -> Option<&str> {
        self.get(name).map(|variable| variable.name.as_str())
    }

    /// Names of all stored variables (not aliases).
    pub(crate) fn variable_names(&self) -> impl Iterator<Item = &str> {
        self.variables.keys().map(String::as_str)
    }

    /// Reads `buf.len()` bytes starting `byte_offset` bytes into `variable`'s data.
    pub(crate) fn read_at(
        &mut self,
        variable: &Ct2Variable,
        byte_offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ConvertError> {
        let start = variable.data_offset + byte_offset;
        let io_error = |path: &Path, source: io::Error| ConvertError::Io {
            path: path.to_owned(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(|source| io_error(&self.path, source))?;
        self.file.read_exact(buf).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                // The index said the data was there; the file shrank since.
                ConvertError::Truncated {
                    path: self.path.clone(),
                    what: format!("data of {}", variable.name),
                    offset: start,
                }
            } else {
                io_error(&self.path, source)
            }
        })
    }

    /// Reads an integer scalar such as `encoder/num_heads`.
    pub(crate) fn read_int_scalar(&mut self, name: &str) -> Result<i64, ConvertError> {
        let variable = self.variable(name)?.clone();
        if variable.n_elements() != 1 {
            return Err(ConvertError::WrongShape {
                path: self.path.clone(),
                name: name.to_owned(),
                expected: vec![],
                found: variable.shape.clone(),
            });
        }
        let mut bytes = [0u8; 4];
        let size = variable.dtype.size() as usize;
        self.read_at(&variable, 0, &mut bytes[..size])?;
        Ok(match variable.dtype {
            Ct2Dtype::I8 => i64::from(bytes[0] as i8),
            Ct2Dtype::I16 => i64::from(i16::from_le_bytes([bytes[0], bytes[1]])),
            Ct2Dtype::I32 => i64::from(i32::from_le_bytes(bytes)),
            other => {
                return Err(ConvertError::UnsupportedDtype {
                    path: self.path.clone(),
                    name: name.to_owned(),
                    dtype: other.name().to_owned(),
                })
            }
        })
    }
}

/// Sequential reader for the index, tracking the offset for error messages.
struct IndexReader<'a> {
    path: &'a Path,
    reader: BufReader<&'a File>,
    offset: u64,
    file_len: u64,
}

impl IndexReader<'_> {
    fn corrupt(&self, reason: String) -> ConvertError {
        ConvertError::NotCt2 {
            path: self.path.to_owned(),
            reason: format!("{reason} (at byte {})", self.offset),
        }
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ConvertError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), ConvertError> {
        self.reader.read_exact(buf).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                ConvertError::Truncated {
                    path: self.path.to_owned(),
                    what: what.to_owned(),
                    offset: self.offset,
                }
            } else {
                ConvertError::Io {
                    path: self.path.to_owned(),
                    source,
                }
            }
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn u8(&mut self, what: &str) -> Result<u8, ConvertError> {
        Ok(self.bytes::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, ConvertError> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, ConvertError> {
        let len_with_nul = u16::from_le_bytes(self.bytes(what)?) as usize;
        if len_with_nul == 0 {
            return Err(self.corrupt(format!("{what} has length 0 (no NUL terminator)")));
        }
        let mut raw = vec![0u8; len_with_nul];
        self.fill(&mut raw, what)?;
        if raw.pop() != Some(0) {
            return Err(self.corrupt(format!("{what} is not NUL-terminated")));
        }
        String::from_utf8(raw).map_err(|_| self.corrupt(format!("{what} is not valid UTF-8")))
    }

    fn variable(&mut self) -> Result<Ct2Variable, ConvertError> {
        let name = self.string("variable name")?;
        let rank = self.u8(&format!("rank of {name}"))?;
        if rank > MAX_RANK {
            return Err(self.corrupt(format!("variable {name} has rank {rank}")));
        }
        let mut shape = Vec::with_capacity(rank as usize);
        for _ in 0..rank {
            shape.push(u64::from(self.u32(&format!("shape of {name}"))?));
        }
        let dtype_id = self.u8(&format!("dtype of {name}"))?;
        let dtype = Ct2Dtype::from_id(dtype_id)
            .ok_or_else(|| self.corrupt(format!("variable {name} has unknown dtype {dtype_id}")))?;
        let n_bytes = u64::from(self.u32(&format!("size of {name}"))?);
        let expected_bytes = shape.iter().product::<u64>() * dtype.size();
        if n_bytes != expected_bytes {
            return Err(self.corrupt(format!(
                "variable {name} declares {n_bytes} bytes, but shape {shape:?} of {} needs {expected_bytes}",
                dtype.name()
            )));
        }
        let data_offset = self.offset;
        if data_offset + n_bytes > self.file_len {
            return Err(ConvertError::Truncated {
                path: self.path.to_owned(),
                what: format!("data of {name} ({n_bytes} bytes)"),
                offset: data_offset,
            });
        }
        self.reader
            .seek_relative(n_bytes as i64)
            .map_err(|source| ConvertError::Io {
                path: self.path.to_owned(),
                source,
            })?;
        self.offset += n_bytes;
        Ok(Ct2Variable {
            name,
            shape,
            dtype,
            data_offset,
        })
    }
}
