//! CTranslate2 (faster-whisper) → whisper.cpp legacy ggml converter.
//!
//! Hark downloads Whisper weights in CTranslate2 form (a directory with
//! `model.bin` and `tokenizer.json`) and runs them with whisper.cpp, which
//! wants the ggml file produced by whisper.cpp's `convert-pt-to-ggml.py`.
//! This module writes that file byte for byte as the script would for the
//! same weights: same hyper-parameters, mel filter bank, vocabulary, tensor
//! names, shapes, element types and order (the state-dict order of OpenAI's
//! PyTorch checkpoint).
//!
//! The two formats hold the same numbers under different names, with three
//! structural differences undone here:
//!
//! * self-attention stores Q, K and V as one fused `3d × d` matrix
//!   (`linear_0`), and cross-attention fuses K and V into `2d × d`
//!   (`linear_1`): they are split back into rows. The fused key bias is zero
//!   padding (Whisper's key projection has no bias, nor does whisper.cpp's
//!   model) and is checked and dropped;
//! * the mel filter bank and the byte-level vocabulary are not in the CT2
//!   model: they are recomputed ([`mel`]) and decoded from `tokenizer.json`
//!   ([`vocab`]);
//! * the output projection is an alias of the token embedding in CT2 and
//!   implicit in whisper.cpp.
//!
//! Tensors stream from `model.bin` to the output in chunks, so memory use
//! stays at a few megabytes whatever the model size.

mod ct2;
mod ggml;
mod half;
mod mel;
mod vocab;

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use ct2::{Ct2Dtype, Ct2Model, Ct2Variable};
pub use ggml::{read_ggml_header, GgmlHeader};
use ggml::{GgmlType, FTYPE_MOSTLY_F16};
use vocab::TextVocabulary;

/// Spec name and revision of the CTranslate2 layout this converter maps.
const SUPPORTED_SPEC: &str = "WhisperSpec";
const SUPPORTED_SPEC_REVISION: u32 = 3;

/// Elements converted per read/write round trip (1 MiB of f32 output).
const CHUNK_ELEMENTS: usize = 256 * 1024;

/// Anything that stops a conversion; each variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{} is missing", .path.display())]
    MissingFile { path: PathBuf },
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a CTranslate2 model file: {reason}", .path.display())]
    NotCt2 { path: PathBuf, reason: String },
    #[error(
        "{} uses CTranslate2 binary version {version}; only version {} is supported",
        .path.display(),
        ct2::SUPPORTED_BINARY_VERSION
    )]
    UnsupportedBinaryVersion { path: PathBuf, version: u32 },
    #[error(
        "{} holds a {spec} (revision {revision}) model; only {SUPPORTED_SPEC} revision {SUPPORTED_SPEC_REVISION} can be converted",
        .path.display()
    )]
    UnsupportedSpec {
        path: PathBuf,
        spec: String,
        revision: u32,
    },
    #[error("{} is truncated: {what} at byte {offset} runs past the end of the file", .path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
    },
    #[error("{} has no tensor \"{name}\"", .path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("{}: tensor \"{name}\" has shape {found:?}, expected {expected:?}", .path.display())]
    WrongShape {
        path: PathBuf,
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error(
        "{}: tensor \"{name}\" is {dtype}; only float16/float32/bfloat16 models can be converted (quantized models cannot)",
        .path.display()
    )]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{}: {reason}", .path.display())]
    InvalidModel { path: PathBuf, reason: String },
    #[error("{}: unusable tokenizer: {reason}", .path.display())]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{} is not a whisper.cpp ggml file (magic {magic:#010x})", .path.display())]
    NotGgml { path: PathBuf, magic: u32 },
}

/// What a conversion produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertSummary {
    /// Tensor records written (167 for tiny, 245 for base).
    pub n_tensors: usize,
    /// Size of the output file.
    pub bytes_written: u64,
    pub n_vocab: u32,
    pub n_audio_layer: u32,
    pub n_text_layer: u32,
    pub n_mels: u32,
    /// Regular tokens written to the vocabulary section (50257 for Whisper).
    pub n_text_tokens: u32,
    /// whisper.cpp's notion: `n_vocab >= 51865`.
    pub multilingual: bool,
    /// The hyper-parameters written, as [`read_ggml_header`] will read them.
    pub header: GgmlHeader,
}

/// Converts the CT2 directory into `out`. Writes to a temporary sibling file
/// and renames at the end, so an interrupted run never leaves a file at
/// `out`. `progress(done_bytes, total_bytes)` is called now and then.
///
/// The input is fully validated before anything is written.
pub fn convert_ct2_dir(
    ct2_dir: &Path,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConvertSummary, ConvertError> {
    let mut model = Ct2Model::open(&ct2_dir.join("model.bin"))?;
    if model.spec_name != SUPPORTED_SPEC || model.spec_revision != SUPPORTED_SPEC_REVISION {
        return Err(ConvertError::UnsupportedSpec {
            path: model.path().to_owned(),
            spec: model.spec_name.clone(),
            revision: model.spec_revision,
        });
    }
    let dims = WhisperDims::read(&mut model)?;
    let header = dims.ggml_header(model.path())?;
    let plan = plan_tensors(&model, &dims)?;
    check_key_biases_are_zero(&mut model, &dims)?;
    let vocabulary = vocab::read_tokenizer_json(&ct2_dir.join("tokenizer.json"), dims.n_vocab)?;
    let mel_filters = mel::slaney_mel_filters(
        mel::WHISPER_SAMPLE_RATE,
        mel::WHISPER_N_FFT,
        dims.n_mels as usize,
    );

    let total_bytes = ggml::HEADER_LEN
        + mel_section_len(dims.n_mels)
        + vocabulary.encoded_len()
        + plan.iter().map(TensorPlan::record_len).sum::<u64>();

    let temp_path = temp_sibling(out);
    let temp_file = TempFile::create(&temp_path)?;
    let mut sink = Sink {
        writer: BufWriter::with_capacity(1 << 20, &temp_file.file),
        path: &temp_path,
        written: 0,
        total: total_bytes,
        last_reported: 0,
        progress,
    };
    (sink.progress)(0, total_bytes);
    header
        .write_to(&mut sink.writer)
        .map_err(|source| sink.io_error(source))?;
    sink.wrote(ggml::HEADER_LEN);
    write_mel_filters(&mut sink, dims.n_mels, &mel_filters)?;
    write_vocabulary(&mut sink, &vocabulary)?;
    let mut chunk = ChunkBuffers::default();
    for tensor in &plan {
        write_tensor(&mut sink, &mut model, tensor, &mut chunk)?;
    }
    sink.writer
        .flush()
        .map_err(|source| sink.io_error(source))?;
    let bytes_written = sink.written;
    (sink.progress)(bytes_written, total_bytes);
    drop(sink);
    debug_assert_eq!(bytes_written, total_bytes, "size bookkeeping is off");

    temp_file.persist(out)?;
    tracing::info!(
        out = %out.display(),
        bytes = bytes_written,
        tensors = plan.len(),
        "converted CTranslate2 Whisper model to ggml"
    );
    Ok(ConvertSummary {
        n_tensors: plan.len(),
        bytes_written,
        n_vocab: dims.n_vocab as u32,
        n_audio_layer: dims.n_audio_layer as u32,
        n_text_layer: dims.n_text_layer as u32,
        n_mels: dims.n_mels as u32,
        n_text_tokens: vocabulary.tokens.len() as u32,
        multilingual: dims.n_vocab >= vocab::MULTILINGUAL_MIN_VOCAB,
        header,
    })
}

/// Model dimensions, read off the CT2 tensor shapes.
#[derive(Debug, Clone, Copy)]
struct WhisperDims {
    n_vocab: u64,
    n_audio_ctx: u64,
    n_audio_state: u64,
    n_audio_head: u64,
    n_audio_layer: u64,
    n_text_ctx: u64,
    n_text_state: u64,
    n_text_head: u64,
    n_text_layer: u64,
    n_mels: u64,
}

impl WhisperDims {
    fn read(model: &mut Ct2Model) -> Result<Self, ConvertError> {
        let [n_vocab, n_text_state] = matrix_shape(model, "decoder/embeddings/weight")?;
        let [n_text_ctx, _] = matrix_shape(model, "decoder/position_encodings/encodings")?;
        let [n_audio_ctx, n_audio_state] =
            matrix_shape(model, "encoder/position_encodings/encodings")?;
        let conv1 = model.variable("encoder/conv1/weight")?;
        let n_mels = match conv1.shape[..] {
            [_, n_mels, _] => n_mels,
            _ => {
                return Err(ConvertError::WrongShape {
                    path: model.path().to_owned(),
                    name: conv1.name.clone(),
                    expected: vec![n_audio_state, 80, 3],
                    found: conv1.shape.clone(),
                })
            }
        };

        // Whisper ties the output projection to the token embedding, and
        // whisper.cpp relies on it; an untied projection cannot be expressed.
        let embedding = model.resolved_name("decoder/embeddings/weight");
        if let Some(projection) = model.resolved_name("decoder/projection/weight") {
            if Some(projection) != embedding {
                return Err(ConvertError::InvalidModel {
                    path: model.path().to_owned(),
                    reason: "decoder/projection/weight is not tied to decoder/embeddings/weight; \
                             whisper.cpp cannot represent a separate output projection"
                        .to_owned(),
                });
            }
        }

        let dims = Self {
            n_vocab,
            n_audio_ctx,
            n_audio_state,
            n_audio_head: read_head_count(model, "encoder/num_heads", n_audio_state)?,
            n_audio_layer: count_layers(model, "encoder/layer_")?,
            n_text_ctx,
            n_text_state,
            n_text_head: read_head_count(model, "decoder/num_heads", n_text_state)?,
            n_text_layer: count_layers(model, "decoder/layer_")?,
            n_mels,
        };
        Ok(dims)
    }

    fn ggml_header(&self, path: &Path) -> Result<GgmlHeader, ConvertError> {
        let field = |name: &str, value: u64| {
            i32::try_from(value).map_err(|_| ConvertError::InvalidModel {
                path: path.to_owned(),
                reason: format!("{name} = {value} does not fit the ggml header"),
            })
        };
        Ok(GgmlHeader {
            n_vocab: field("n_vocab", self.n_vocab)?,
            n_audio_ctx: field("n_audio_ctx", self.n_audio_ctx)?,
            n_audio_state: field("n_audio_state", self.n_audio_state)?,
            n_audio_head: field("n_audio_head", self.n_audio_head)?,
            n_audio_layer: field("n_audio_layer", self.n_audio_layer)?,
            n_text_ctx: field("n_text_ctx", self.n_text_ctx)?,
            n_text_state: field("n_text_state", self.n_text_state)?,
            n_text_head: field("n_text_head", self.n_text_head)?,
            n_text_layer: field("n_text_layer", self.n_text_layer)?,
            n_mels: field("n_mels", self.n_mels)?,
            ftype: FTYPE_MOSTLY_F16,
        })
    }
}

fn matrix_shape(model: &Ct2Model, name: &str) -> Result<[u64; 2], ConvertError> {
    let variable = model.variable(name)?;
    match variable.shape[..] {
        [rows, cols] if rows > 0 && cols > 0 => Ok([rows, cols]),
        _ => Err(ConvertError::WrongShape {
            path: model.path().to_owned(),
            name: name.to_owned(),
            expected: vec![0, 0],
            found: variable.shape.clone(),
        }),
    }
}

fn read_head_count(model: &mut Ct2Model, name: &str, state: u64) -> Result<u64, ConvertError> {
    let heads = model.read_int_scalar(name)?;
    // `is_multiple_of` would need Rust 1.87; the workspace targets 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    if heads <= 0 || state % heads as u64 != 0 {
        return Err(ConvertError::InvalidModel {
            path: model.path().to_owned(),
            reason: format!("{name} = {heads} does not divide the model width {state}"),
        });
    }
    Ok(heads as u64)
}

/// Number of layers: one more than the highest `{prefix}N/` index present.
///
/// Counting by the highest index (not the first gap) means a layer with a
/// missing tensor is reported as such instead of silently truncating.
fn count_layers(model: &Ct2Model, prefix: &str) -> Result<u64, ConvertError> {
    let highest = model
        .variable_names()
        .filter_map(|name| {
            name.strip_prefix(prefix)?
                .split('/')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max();
    highest
        .map(|index| index + 1)
        .ok_or_else(|| ConvertError::MissingTensor {
            path: model.path().to_owned(),
            name: format!("{prefix}0/..."),
        })
}

/// One tensor of the output and where its numbers come from.
#[derive(Debug, Clone)]
struct TensorPlan {
    /// OpenAI/whisper.cpp name, e.g. `encoder.blocks.0.attn.query.weight`.
    name: String,
    /// PyTorch shape (outermost first), as the Python script sees it.
    torch_dims: Vec<u64>,
    ggml_type: GgmlType,
    source: Ct2Variable,
    /// First element of `source` to copy (non-zero for split fused tensors).
    first_element: u64,
}

impl TensorPlan {
    fn n_elements(&self) -> u64 {
        self.torch_dims.iter().product()
    }

    fn record_len(&self) -> u64 {
        ggml::tensor_record_len(&self.name, &self.torch_dims, self.ggml_type)
    }
}

/// Builds the output tensor list, checking every source tensor's shape.
fn plan_tensors(model: &Ct2Model, dims: &WhisperDims) -> Result<Vec<TensorPlan>, ConvertError> {
    let mut planner = Planner {
        model,
        tensors: Vec::new(),
    };
    let (audio, text) = (dims.n_audio_state, dims.n_text_state);

    // Encoder, in the order of OpenAI's AudioEncoder state dict: its own
    // buffer first, then conv1, conv2, the blocks and ln_post.
    planner.whole(
        "encoder.positional_embedding",
        "encoder/position_encodings/encodings",
        &[dims.n_audio_ctx, audio],
        GgmlType::F32,
    )?;
    planner.whole(
        "encoder.conv1.weight",
        "encoder/conv1/weight",
        &[audio, dims.n_mels, 3],
        GgmlType::F16,
    )?;
    planner.conv_bias("encoder.conv1.bias", "encoder/conv1/bias", audio)?;
    planner.whole(
        "encoder.conv2.weight",
        "encoder/conv2/weight",
        &[audio, audio, 3],
        GgmlType::F16,
    )?;
    planner.conv_bias("encoder.conv2.bias", "encoder/conv2/bias", audio)?;
    for layer in 0..dims.n_audio_layer {
        let ours = format!("encoder.blocks.{layer}");
        let theirs = format!("encoder/layer_{layer}");
        planner.self_attention(&ours, &theirs, audio)?;
        planner.mlp(&ours, &theirs, audio)?;
    }
    planner.layer_norm("encoder.ln_post", "encoder/layer_norm", audio)?;

    // Decoder: its positional_embedding parameter comes before the token
    // embedding module in the state dict.
    planner.whole(
        "decoder.positional_embedding",
        "decoder/position_encodings/encodings",
        &[dims.n_text_ctx, text],
        GgmlType::F32,
    )?;
    planner.whole(
        "decoder.token_embedding.weight",
        "decoder/embeddings/weight",
        &[dims.n_vocab, text],
        GgmlType::F16,
    )?;
    for layer in 0..dims.n_text_layer {
        let ours = format!("decoder.blocks.{layer}");
        let theirs = format!("decoder/layer_{layer}");
        planner.self_attention(&ours, &theirs, text)?;
        planner.cross_attention(&ours, &theirs, text)?;
        planner.mlp(&ours, &theirs, text)?;
    }
    planner.layer_norm("decoder.ln", "decoder/layer_norm", text)?;
    Ok(planner.tensors)
}

struct Planner<'a> {
    model: &'a Ct2Model,
    tensors: Vec<TensorPlan>,
}

impl Planner<'_> {
    /// Checks that `ct2_name` has shape `ct2_shape` and a float type.
    fn source(&self, ct2_name: &str, ct2_shape: &[u64]) -> Result<Ct2Variable, ConvertError> {
        let variable = self.model.variable(ct2_name)?;
        if variable.shape != ct2_shape {
            return Err(ConvertError::WrongShape {
                path: self.model.path().to_owned(),
                name: ct2_name.to_owned(),
                expected: ct2_shape.to_vec(),
                found: variable.shape.clone(),
            });
        }
        if !matches!(
            variable.dtype,
            Ct2Dtype::F16 | Ct2Dtype::F32 | Ct2Dtype::BF16
        ) {
            return Err(ConvertError::UnsupportedDtype {
                path: self.model.path().to_owned(),
                name: ct2_name.to_owned(),
                dtype: variable.dtype.name().to_owned(),
            });
        }
        Ok(variable.clone())
    }

    /// A tensor copied whole, with the same shape in both formats.
    fn whole(
        &mut self,
        name: &str,
        ct2_name: &str,
        shape: &[u64],
        ggml_type: GgmlType,
    ) -> Result<(), ConvertError> {
        let source = self.source(ct2_name, shape)?;
        self.tensors.push(TensorPlan {
            name: name.to_owned(),
            torch_dims: shape.to_vec(),
            ggml_type,
            source,
            first_element: 0,
        });
        Ok(())
    }

    /// Rows `[part·rows, (part+1)·rows)` of a fused tensor whose first
    /// dimension is `parts·rows`.
    fn fused_part(
        &mut self,
        name: &str,
        ct2_name: &str,
        parts: u64,
        part: u64,
        part_shape: &[u64],
        ggml_type: GgmlType,
    ) -> Result<(), ConvertError> {
        let mut fused_shape = part_shape.to_vec();
        fused_shape[0] *= parts;
        let source = self.source(ct2_name, &fused_shape)?;
        let part_elements: u64 = part_shape.iter().product();
        self.tensors.push(TensorPlan {
            name: name.to_owned(),
            torch_dims: part_shape.to_vec(),
            ggml_type,
            source,
            first_element: part * part_elements,
        });
        Ok(())
    }

    /// Conv biases: the Python script reshapes them from `[n]` to `[n, 1]`
    /// (whisper.cpp broadcasts them over time) and keeps them f32.
    fn conv_bias(&mut self, name: &str, ct2_name: &str, width: u64) -> Result<(), ConvertError> {
        let source = self.source(ct2_name, &[width])?;
        self.tensors.push(TensorPlan {
            name: name.to_owned(),
            torch_dims: vec![width, 1],
            ggml_type: GgmlType::F32,
            source,
            first_element: 0,
        });
        Ok(())
    }

    /// A linear layer: f16 weight `[out, in]`, f32 bias `[out]`.
    fn linear(
        &mut self,
        name: &str,
        ct2_name: &str,
        out_dim: u64,
        in_dim: u64,
    ) -> Result<(), ConvertError> {
        self.whole(
            &format!("{name}.weight"),
            &format!("{ct2_name}/weight"),
            &[out_dim, in_dim],
            GgmlType::F16,
        )?;
        self.whole(
            &format!("{name}.bias"),
            &format!("{ct2_name}/bias"),
            &[out_dim],
            GgmlType::F32,
        )
    }

    fn layer_norm(&mut self, name: &str, ct2_name: &str, width: u64) -> Result<(), ConvertError> {
        self.whole(
            &format!("{name}.weight"),
            &format!("{ct2_name}/gamma"),
            &[width],
            GgmlType::F32,
        )?;
        self.whole(
            &format!("{name}.bias"),
            &format!("{ct2_name}/beta"),
            &[width],
            GgmlType::F32,
        )
    }

    /// `attn.*` and `attn_ln.*` from CT2's `self_attention`, whose
    /// `linear_0` is Q, K and V stacked.
    fn self_attention(&mut self, ours: &str, theirs: &str, d: u64) -> Result<(), ConvertError> {
        let fused_weight = format!("{theirs}/self_attention/linear_0/weight");
        let fused_bias = format!("{theirs}/self_attention/linear_0/bias");
        let attn = format!("{ours}.attn");
        let weight = |projection: &str| format!("{attn}.{projection}.weight");
        let bias = |projection: &str| format!("{attn}.{projection}.bias");
        self.fused_part(
            &weight("query"),
            &fused_weight,
            3,
            0,
            &[d, d],
            GgmlType::F16,
        )?;
        self.fused_part(&bias("query"), &fused_bias, 3, 0, &[d], GgmlType::F32)?;
        self.fused_part(&weight("key"), &fused_weight, 3, 1, &[d, d], GgmlType::F16)?;
        self.fused_part(
            &weight("value"),
            &fused_weight,
            3,
            2,
            &[d, d],
            GgmlType::F16,
        )?;
        self.fused_part(&bias("value"), &fused_bias, 3, 2, &[d], GgmlType::F32)?;
        self.linear(
            &format!("{attn}.out"),
            &format!("{theirs}/self_attention/linear_1"),
            d,
            d,
        )?;
        self.layer_norm(
            &format!("{ours}.attn_ln"),
            &format!("{theirs}/self_attention/layer_norm"),
            d,
        )
    }

    /// `cross_attn.*` and `cross_attn_ln.*` from CT2's `attention`: Q in
    /// `linear_0`, K and V stacked in `linear_1`, output in `linear_2`.
    fn cross_attention(&mut self, ours: &str, theirs: &str, d: u64) -> Result<(), ConvertError> {
        let ct2 = format!("{theirs}/attention");
        let attn = format!("{ours}.cross_attn");
        self.linear(&format!("{attn}.query"), &format!("{ct2}/linear_0"), d, d)?;
        let fused_weight = format!("{ct2}/linear_1/weight");
        let fused_bias = format!("{ct2}/linear_1/bias");
        self.fused_part(
            &format!("{attn}.key.weight"),
            &fused_weight,
            2,
            0,
            &[d, d],
            GgmlType::F16,
        )?;
        self.fused_part(
            &format!("{attn}.value.weight"),
            &fused_weight,
            2,
            1,
            &[d, d],
            GgmlType::F16,
        )?;
        self.fused_part(
            &format!("{attn}.value.bias"),
            &fused_bias,
            2,
            1,
            &[d],
            GgmlType::F32,
        )?;
        self.linear(&format!("{attn}.out"), &format!("{ct2}/linear_2"), d, d)?;
        self.layer_norm(
            &format!("{ours}.cross_attn_ln"),
            &format!("{ct2}/layer_norm"),
            d,
        )
    }

    /// `mlp.0` / `mlp.2` (the GELU sits at index 1) and `mlp_ln`.
    fn mlp(&mut self, ours: &str, theirs: &str, d: u64) -> Result<(), ConvertError> {
        self.linear(
            &format!("{ours}.mlp.0"),
            &format!("{theirs}/ffn/linear_0"),
            4 * d,
            d,
        )?;
        self.linear(
            &format!("{ours}.mlp.2"),
            &format!("{theirs}/ffn/linear_1"),
            d,
            4 * d,
        )?;
        self.layer_norm(
            &format!("{ours}.mlp_ln"),
            &format!("{theirs}/ffn/layer_norm"),
            d,
        )
    }
}

/// The key slices of the fused attention biases must be zero: whisper.cpp
/// has no key bias, so anything else would be silently lost.
fn check_key_biases_are_zero(model: &mut Ct2Model, dims: &WhisperDims) -> Result<(), ConvertError> {
    let mut key_biases = Vec::new();
    for layer in 0..dims.n_audio_layer {
        let name = format!("encoder/layer_{layer}/self_attention/linear_0/bias");
        key_biases.push((name, 1, dims.n_audio_state));
    }
    for layer in 0..dims.n_text_layer {
        let name = format!("decoder/layer_{layer}/self_attention/linear_0/bias");
        key_biases.push((name, 1, dims.n_text_state));
        let name = format!("decoder/layer_{layer}/attention/linear_1/bias");
        key_biases.push((name, 0, dims.n_text_state));
    }
    let mut raw = Vec::new();
    for (name, part, width) in key_biases {
        let variable = model.variable(&name)?.clone();
        let element_size = variable.dtype.size();
        raw.resize((width * element_size) as usize, 0);
        model.read_at(&variable, part * width * element_size, &mut raw)?;
        // ±0 in every float encoding has all bits but the sign bit clear.
        let is_zero = |element: &[u8]| match *element {
            [low, high] => u16::from_le_bytes([low, high]) & 0x7fff == 0,
            [a, b, c, d] => u32::from_le_bytes([a, b, c, d]) & 0x7fff_ffff == 0,
            _ => false,
        };
        if !raw.chunks_exact(element_size as usize).all(is_zero) {
            return Err(ConvertError::InvalidModel {
                path: model.path().to_owned(),
                reason: format!(
                    "the key part of {name} is not zero; whisper.cpp has no key bias, \
                     so converting would change the model"
                ),
            });
        }
    }
    Ok(())
}

/// The output file being written, with byte counting and throttled progress.
struct Sink<'a> {
    writer: BufWriter<&'a File>,
    path: &'a Path,
    written: u64,
    total: u64,
    last_reported: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl Sink<'_> {
    fn io_error(&self, source: io::Error) -> ConvertError {
        ConvertError::Io {
            path: self.path.to_owned(),
            source,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ConvertError> {
        self.writer
            .write_all(bytes)
            .map_err(|source| self.io_error(source))?;
        self.wrote(bytes.len() as u64);
        Ok(())
    }

    fn write_i32(&mut self, value: i32) -> Result<(), ConvertError> {
        self.write(&value.to_le_bytes())
    }

    /// Counts bytes and reports progress about every 0.5 %.
    fn wrote(&mut self, n: u64) {
        self.written += n;
        if self.written - self.last_reported >= (self.total / 200).max(1) {
            self.last_reported = self.written;
            (self.progress)(self.written, self.total);
        }
    }
}

fn mel_section_len(n_mels: u64) -> u64 {
    8 + n_mels * mel::fft_bins(mel::WHISPER_N_FFT) as u64 * 4
}

fn write_mel_filters(sink: &mut Sink, n_mels: u64, filters: &[f32]) -> Result<(), ConvertError> {
    sink.write_i32(n_mels as i32)?;
    sink.write_i32(mel::fft_bins(mel::WHISPER_N_FFT) as i32)?;
    let bytes: Vec<u8> = filters.iter().flat_map(|w| w.to_le_bytes()).collect();
    sink.write(&bytes)
}

fn write_vocabulary(sink: &mut Sink, vocabulary: &TextVocabulary) -> Result<(), ConvertError> {
    sink.write_i32(vocabulary.tokens.len() as i32)?;
    for token in &vocabulary.tokens {
        sink.write_i32(token.len() as i32)?;
        sink.write(token)?;
    }
    Ok(())
}

/// Reusable buffers for streaming one chunk of a tensor.
#[derive(Default)]
struct ChunkBuffers {
    source: Vec<u8>,
    converted: Vec<u8>,
}

fn write_tensor(
    sink: &mut Sink,
    model: &mut Ct2Model,
    tensor: &TensorPlan,
    chunk: &mut ChunkBuffers,
) -> Result<(), ConvertError> {
    ggml::write_tensor_header(
        &mut sink.writer,
        &tensor.name,
        &tensor.torch_dims,
        tensor.ggml_type,
    )
    .map_err(|source| sink.io_error(source))?;
    sink.wrote(ggml::tensor_header_len(&tensor.name, &tensor.torch_dims));

    let source_size = tensor.source.dtype.size();
    let mut element = tensor.first_element;
    let end = tensor.first_element + tensor.n_elements();
    while element < end {
        let count = (end - element).min(CHUNK_ELEMENTS as u64);
        chunk.source.resize((count * source_size) as usize, 0);
        model.read_at(&tensor.source, element * source_size, &mut chunk.source)?;
        if let Some(converted) = convert_elements(
            tensor.source.dtype,
            tensor.ggml_type,
            &chunk.source,
            &mut chunk.converted,
        ) {
            sink.write(converted)?;
        } else {
            sink.write(&chunk.source)?;
        }
        element += count;
    }
    Ok(())
}

/// Converts little-endian elements of `from` into `to`; `None` when the
/// bytes can be written as they are.
fn convert_elements<'a>(
    from: Ct2Dtype,
    to: GgmlType,
    source: &[u8],
    converted: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    let halves = || {
        source
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let singles = || {
        source
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    converted.clear();
    match (from, to) {
        (Ct2Dtype::F16, GgmlType::F16) | (Ct2Dtype::F32, GgmlType::F32) => return None,
        (Ct2Dtype::F16, GgmlType::F32) => {
            converted.extend(halves().flat_map(|h| half::f16_to_f32(h).to_le_bytes()))
        }
        (Ct2Dtype::BF16, GgmlType::F32) => {
            converted.extend(halves().flat_map(|h| half::bf16_to_f32(h).to_le_bytes()))
        }
        (Ct2Dtype::BF16, GgmlType::F16) => converted
            .extend(halves().flat_map(|h| half::f32_to_f16(half::bf16_to_f32(h)).to_le_bytes())),
        (Ct2Dtype::F32, GgmlType::F16) => {
            converted.extend(singles().flat_map(|v| half::f32_to_f16(v).to_le_bytes()))
        }
        (other, _) => unreachable!("planner rejects {other:?} sources"),
    }
    Some(converted)
}

/// `.NAME.partial-PID` next to `out`, so the final rename stays on one
/// filesystem and is atomic.
fn temp_sibling(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ggml-model.bin".to_owned());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// A file that is deleted on drop unless [`persist`](Self::persist)ed.
struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    fn create(path: &Path) -> Result<Self, ConvertError> {
        let file = File::create(path).map_err(|source| ConvertError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            file,
            persisted: false,
        })
    }

    /// Syncs the data to disk, then renames the file to `target`.
    fn persist(mut self, target: &Path) -> Result<(), ConvertError> {
        self.file.sync_all().map_err(|source| ConvertError::Io {
            path: self.path.clone(),
            source,
        })?;
        fs::rename(&self.path, target).map_err(|source| ConvertError::Io {
            path: target.to_owned(),
            source,
        })?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            // Best effort: the error that got us here matters more.
            let _ = fs::remove_file(&self.path);
        }
    }
}
