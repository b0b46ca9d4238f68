//! whisper.cpp's legacy ggml model file, as written by its
//! `models/convert-pt-to-ggml.py`. All integers are little-endian i32:
//!
//! ```text
//! magic 0x67676d6c ("ggml")
//! n_vocab n_audio_ctx n_audio_state n_audio_head n_audio_layer
//! n_text_ctx n_text_state n_text_head n_text_layer n_mels ftype
//! n_mel n_fft_bins  f32[n_mel × n_fft_bins]           mel filter bank
//! n_tokens  n_tokens × { len, bytes[len] }            vocabulary, id order
//! per tensor: n_dims name_len type dims[n_dims] (innermost first) name data
//! ```
//!
//! Tensors are not aligned or padded; whisper.cpp reads them sequentially and
//! finds them by name.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::ConvertError;

/// "ggml" read as a little-endian u32.
pub(crate) const GGML_MAGIC: u32 = 0x6767_6d6c;

/// Bytes in the magic plus the eleven hyper-parameters.
pub(crate) const HEADER_LEN: u64 = 4 + 11 * 4;

/// whisper.cpp's `ftype` for "big matrices in f16, the rest in f32".
pub(crate) const FTYPE_MOSTLY_F16: i32 = 1;

/// The hyper-parameters at the start of a whisper.cpp model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlHeader {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    pub ftype: i32,
}

impl GgmlHeader {
    fn fields(&self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }

    pub(crate) fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&GGML_MAGIC.to_le_bytes())?;
        for field in self.fields() {
            out.write_all(&field.to_le_bytes())?;
        }
        Ok(())
    }
}

/// Element type codes whisper.cpp reads per tensor (ggml's `GGML_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GgmlType {
    F32 = 0,
    F16 = 1,
}

impl GgmlType {
    pub(crate) fn size(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }
}

/// Writes a tensor record's header; the caller streams the data after it.
///
/// `torch_dims` is the PyTorch shape (outermost first); ggml stores the
/// innermost dimension first, so they are written reversed.
pub(crate) fn write_tensor_header(
    out: &mut impl Write,
    name: &str,
    torch_dims: &[u64],
    ggml_type: GgmlType,
) -> io::Result<()> {
    out.write_all(&(torch_dims.len() as i32).to_le_bytes())?;
    out.write_all(&(name.len() as i32).to_le_bytes())?;
    out.write_all(&(ggml_type as i32).to_le_bytes())?;
    for &dim in torch_dims.iter().rev() {
        out.write_all(&(dim as i32).to_le_bytes())?;
    }
    out.write_all(name.as_bytes())
}

/// Bytes of a tensor record before its data: three i32s, the dims, the name.
pub(crate) fn tensor_header_len(name: &str, torch_dims: &[u64]) -> u64 {
    3 * 4 + 4 * torch_dims.len() as u64 + name.len() as u64
}

/// Bytes one tensor record occupies (header, name and data).
pub(crate) fn tensor_record_len(name: &str, torch_dims: &[u64], ggml_type: GgmlType) -> u64 {
    tensor_header_len(name, torch_dims) + torch_dims.iter().product::<u64>() * ggml_type.size()
}

/// Reads just the magic and hyper-parameters of a whisper.cpp ggml file.
pub fn read_ggml_header(path: &Path) -> Result<GgmlHeader, ConvertError> {
    let io_error = |source: io::Error| {
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
    };
    let mut file = File::open(path).map_err(io_error)?;
    let mut raw = [0u8; HEADER_LEN as usize];
    let mut filled = 0;
    while filled < raw.len() {
        match file.read(&mut raw[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(io_error(error)),
        }
    }
    // Check the magic first so a short non-ggml file says "not ggml".
    if filled >= 4 {
        let magic = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        if magic != GGML_MAGIC {
            return Err(ConvertError::NotGgml {
                path: path.to_owned(),
                magic,
            });
        }
    }
    if filled < raw.len() {
        return Err(ConvertError::Truncated {
            path: path.to_owned(),
            what: "ggml header".to_owned(),
            offset: filled as u64,
        });
    }
    let field = |index: usize| {
        let at = 4 + 4 * index;
        i32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]])
    };
    Ok(GgmlHeader {
        n_vocab: field(0),
        n_audio_ctx: field(1),
        n_audio_state: field(2),
        n_audio_head: field(3),
        n_audio_layer: field(4),
        n_text_ctx: field(5),
        n_text_state: field(6),
        n_text_head: field(7),
        n_text_layer: field(8),
        n_mels: field(9),
        ftype: field(10),
    })
}

/// A whole ggml file parsed back, for tests that check what was written.
#[cfg(test)]
pub(crate) mod layout {
    use super::*;

    pub(crate) struct GgmlLayout {
        pub header: GgmlHeader,
        pub mel_rows: usize,
        pub mel_cols: usize,
        pub mel: Vec<f32>,
        pub tokens: Vec<Vec<u8>>,
        pub tensors: Vec<GgmlTensor>,
    }

    pub(crate) struct GgmlTensor {
        pub name: String,
        /// ggml order: innermost dimension first.
        pub ggml_dims: Vec<i32>,
        pub ggml_type: i32,
        pub data: Vec<u8>,
    }

    impl GgmlTensor {
        pub(crate) fn as_f32(&self) -> Vec<f32> {
            match self.ggml_type {
                0 => self
                    .data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                1 => self
                    .data
                    .chunks_exact(2)
                    .map(|b| super::super::half::f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect(),
                other => panic!("unexpected ggml type {other}"),
            }
        }
    }

    struct Cursor<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl Cursor<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let slice = &self.bytes[self.at..self.at + n];
            self.at += n;
            slice
        }
        fn i32(&mut self) -> i32 {
            let b = self.take(4);
            i32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
    }

    /// Parses a whole file; panics on malformed input (test use only).
    pub(crate) fn read(path: &Path) -> GgmlLayout {
        let bytes = std::fs::read(path).unwrap();
        let header = read_ggml_header(path).unwrap();
        let mut cursor = Cursor {
            bytes: &bytes,
            at: HEADER_LEN as usize,
        };
        let mel_rows = cursor.i32() as usize;
        let mel_cols = cursor.i32() as usize;
        let mel = cursor
            .take(mel_rows * mel_cols * 4)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let n_tokens = cursor.i32() as usize;
        let tokens = (0..n_tokens)
            .map(|_| {
                let len = cursor.i32() as usize;
                cursor.take(len).to_vec()
            })
            .collect();
        let mut tensors = Vec::new();
        while cursor.at < bytes.len() {
            let n_dims = cursor.i32() as usize;
            let name_len = cursor.i32() as usize;
            let ggml_type = cursor.i32();
            let ggml_dims: Vec<i32> = (0..n_dims).map(|_| cursor.i32()).collect();
            let name = String::from_utf8(cursor.take(name_len).to_vec()).unwrap();
            let element_size = if ggml_type == 0 { 4 } else { 2 };
            let n_elements: usize = ggml_dims.iter().map(|&d| d as usize).product();
            let data = cursor.take(n_elements * element_size).to_vec();
            tensors.push(GgmlTensor {
                name,
                ggml_dims,
                ggml_type,
                data,
            });
        }
        GgmlLayout {
            header,
            mel_rows,
            mel_cols,
            mel,
            tokens,
            tensors,
        }
    }
}
