//! Converter tests on synthetic CTranslate2 models built in a temp dir, plus
//! an opt-in run on the real tiny.en model (`HARK_CT2_TINY_DIR`).

use std::path::{Path, PathBuf};

use super::ggml::layout::{self, GgmlLayout};
use super::*;

/// CT2 dtype ids (CTranslate2's `DataType` enum).
const CT2_F32: u8 = 0;
const CT2_I8: u8 = 1;
const CT2_I16: u8 = 2;
const CT2_F16: u8 = 4;
const CT2_BF16: u8 = 5;

/// Dimensions of a synthetic Whisper-shaped model.
#[derive(Clone, Copy)]
struct Dims {
    d: u64,
    heads: i16,
    audio_layers: u64,
    text_layers: u64,
    mels: u64,
    vocab: u64,
    audio_ctx: u64,
    text_ctx: u64,
}

const SMALL: Dims = Dims {
    d: 8,
    heads: 2,
    audio_layers: 2,
    text_layers: 3,
    mels: 4,
    vocab: 270,
    audio_ctx: 6,
    text_ctx: 5,
};

/// Deterministic test values, multiples of 1/8 in [-15, 16): exact in f16,
/// bf16 and f32, so every conversion path must reproduce them exactly.
fn test_value(seed: u64, index: u64) -> f32 {
    ((seed * 31 + index * 7) % 251) as f32 / 8.0 - 15.0
}

fn seed_of(name: &str) -> u64 {
    name.bytes()
        .fold(17u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)))
        % 1000
}

/// The value a CT2 variable holds at `index`, key-bias slices being zero.
fn source_value(name: &str, shape: &[u64], index: u64) -> f32 {
    let is_zero_key_bias = if name.ends_with("self_attention/linear_0/bias") {
        (shape[0] / 3..2 * shape[0] / 3).contains(&index)
    } else if name.ends_with("attention/linear_1/bias") && !name.contains("self_") {
        index < shape[0] / 2
    } else {
        false
    };
    if is_zero_key_bias {
        0.0
    } else {
        test_value(seed_of(name), index)
    }
}

struct Variable {
    name: String,
    shape: Vec<u64>,
    dtype: u8,
    data: Vec<u8>,
}

/// A CTranslate2 `model.bin` under construction.
struct Ct2Builder {
    binary_version: u32,
    spec: String,
    revision: u32,
    variables: Vec<Variable>,
    aliases: Vec<(String, String)>,
}

fn encode(values: impl Iterator<Item = f32>, dtype: u8) -> Vec<u8> {
    values
        .flat_map(|v| match dtype {
            CT2_F32 => v.to_le_bytes().to_vec(),
            CT2_F16 => half::f32_to_f16(v).to_le_bytes().to_vec(),
            CT2_BF16 => ((v.to_bits() >> 16) as u16).to_le_bytes().to_vec(),
            CT2_I8 => vec![v as i8 as u8],
            other => panic!("dtype {other}"),
        })
        .collect()
}

impl Ct2Builder {
    fn whisper(dims: Dims, dtype: u8) -> Self {
        let mut builder = Self {
            binary_version: 6,
            spec: "WhisperSpec".into(),
            revision: 3,
            variables: Vec::new(),
            aliases: Vec::new(),
        };
        let d = dims.d;
        builder.scalar_i16("encoder/num_heads", dims.heads);
        builder.scalar_i16("decoder/num_heads", dims.heads);
        builder.scalar_i8("decoder/pre_norm", 1);
        builder.tensor("encoder/conv1/weight", &[d, dims.mels, 3], dtype);
        builder.tensor("encoder/conv1/bias", &[d], dtype);
        builder.tensor("encoder/conv2/weight", &[d, d, 3], dtype);
        builder.tensor("encoder/conv2/bias", &[d], dtype);
        builder.tensor(
            "encoder/position_encodings/encodings",
            &[dims.audio_ctx, d],
            dtype,
        );
        for layer in 0..dims.audio_layers {
            let p = format!("encoder/layer_{layer}");
            builder.attention_block(&format!("{p}/self_attention"), d, 3, dtype);
            builder.ffn(&p, d, dtype);
        }
        builder.layer_norm("encoder/layer_norm", d, dtype);
        builder.tensor("decoder/embeddings/weight", &[dims.vocab, d], dtype);
        builder.tensor(
            "decoder/position_encodings/encodings",
            &[dims.text_ctx, d],
            dtype,
        );
        for layer in 0..dims.text_layers {
            let p = format!("decoder/layer_{layer}");
            builder.attention_block(&format!("{p}/self_attention"), d, 3, dtype);
            builder.tensor(&format!("{p}/attention/linear_0/weight"), &[d, d], dtype);
            builder.tensor(&format!("{p}/attention/linear_0/bias"), &[d], dtype);
            builder.tensor(
                &format!("{p}/attention/linear_1/weight"),
                &[2 * d, d],
                dtype,
            );
            builder.tensor(&format!("{p}/attention/linear_1/bias"), &[2 * d], dtype);
            builder.tensor(&format!("{p}/attention/linear_2/weight"), &[d, d], dtype);
            builder.tensor(&format!("{p}/attention/linear_2/bias"), &[d], dtype);
            builder.layer_norm(&format!("{p}/attention/layer_norm"), d, dtype);
            builder.ffn(&p, d, dtype);
        }
        builder.layer_norm("decoder/layer_norm", d, dtype);
        builder.aliases.push((
            "decoder/projection/weight".into(),
            "decoder/embeddings/weight".into(),
        ));
        builder
    }

    fn tensor(&mut self, name: &str, shape: &[u64], dtype: u8) {
        let n: u64 = shape.iter().product();
        let data = encode((0..n).map(|i| source_value(name, shape, i)), dtype);
        self.variables.push(Variable {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
            data,
        });
    }

    fn scalar_i16(&mut self, name: &str, value: i16) {
        self.variables.push(Variable {
            name: name.into(),
            shape: vec![],
            dtype: CT2_I16,
            data: value.to_le_bytes().to_vec(),
        });
    }

    fn scalar_i8(&mut self, name: &str, value: i8) {
        self.variables.push(Variable {
            name: name.into(),
            shape: vec![],
            dtype: CT2_I8,
            data: vec![value as u8],
        });
    }

    fn attention_block(&mut self, prefix: &str, d: u64, fused: u64, dtype: u8) {
        self.tensor(&format!("{prefix}/linear_0/weight"), &[fused * d, d], dtype);
        self.tensor(&format!("{prefix}/linear_0/bias"), &[fused * d], dtype);
        self.tensor(&format!("{prefix}/linear_1/weight"), &[d, d], dtype);
        self.tensor(&format!("{prefix}/linear_1/bias"), &[d], dtype);
        self.layer_norm(&format!("{prefix}/layer_norm"), d, dtype);
    }

    fn ffn(&mut self, layer: &str, d: u64, dtype: u8) {
        self.tensor(&format!("{layer}/ffn/linear_0/weight"), &[4 * d, d], dtype);
        self.tensor(&format!("{layer}/ffn/linear_0/bias"), &[4 * d], dtype);
        self.tensor(&format!("{layer}/ffn/linear_1/weight"), &[d, 4 * d], dtype);
        self.tensor(&format!("{layer}/ffn/linear_1/bias"), &[d], dtype);
        self.layer_norm(&format!("{layer}/ffn/layer_norm"), d, dtype);
    }

    fn layer_norm(&mut self, prefix: &str, d: u64, dtype: u8) {
        self.tensor(&format!("{prefix}/gamma"), &[d], dtype);
        self.tensor(&format!("{prefix}/beta"), &[d], dtype);
    }

    fn remove(&mut self, name: &str) {
        let before = self.variables.len();
        self.variables.retain(|v| v.name != name);
        assert_eq!(self.variables.len() + 1, before, "{name} not found");
    }

    fn variable_mut(&mut self, name: &str) -> &mut Variable {
        self.variables
            .iter_mut()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("{name} not found"))
    }

    fn bytes(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u16 + 1).to_le_bytes());
            out.extend(s.as_bytes());
            out.push(0);
        }
        let mut out = Vec::new();
        out.extend(self.binary_version.to_le_bytes());
        string(&mut out, &self.spec);
        out.extend(self.revision.to_le_bytes());
        out.extend((self.variables.len() as u32).to_le_bytes());
        for v in &self.variables {
            string(&mut out, &v.name);
            out.push(v.shape.len() as u8);
            for &dim in &v.shape {
                out.extend((dim as u32).to_le_bytes());
            }
            out.push(v.dtype);
            out.extend((v.data.len() as u32).to_le_bytes());
            out.extend(&v.data);
        }
        out.extend((self.aliases.len() as u32).to_le_bytes());
        for (alias, target) in &self.aliases {
            string(&mut out, alias);
            string(&mut out, target);
        }
        out
    }

    /// Writes `model.bin` and a matching `tokenizer.json` into `dir`.
    fn write_dir(&self, dir: &Path, vocab: u64) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("model.bin"), self.bytes()).unwrap();
        std::fs::write(dir.join("tokenizer.json"), tokenizer_json(vocab)).unwrap();
    }
}

/// Text tokens of the synthetic tokenizer: single bytes (in GPT-2's
/// printable form), then a few merges, then `<|endoftext|>` and specials.
fn synthetic_tokens() -> Vec<String> {
    let mut tokens: Vec<String> = (0x21u8..=0x7e).map(|b| char::from(b).to_string()).collect();
    tokens.extend(["Ġ", "Ċ", "Ġthe", "Ġhello", "ing", "Ã©"].map(String::from));
    tokens
}

fn tokenizer_json(n_vocab: u64) -> String {
    let tokens = synthetic_tokens();
    let eot = tokens.len() as u64;
    let mut vocab = serde_json::Map::new();
    for (id, token) in tokens.iter().enumerate() {
        vocab.insert(token.clone(), (id as u64).into());
    }
    vocab.insert("<|endoftext|>".into(), eot.into());
    let added: Vec<_> = (eot..n_vocab)
        .map(|id| {
            let content = match id - eot {
                0 => "<|endoftext|>".to_owned(),
                1 => "<|startoftranscript|>".to_owned(),
                n => format!("<|extra_{n}|>"),
            };
            serde_json::json!({"id": id, "content": content, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "added_tokens": added,
        "model": {"type": "BPE", "vocab": vocab, "merges": ["Ġ t", "h e"]},
    })
    .to_string()
}

/// Expected raw bytes of the vocabulary section's tokens.
fn expected_token_bytes() -> Vec<Vec<u8>> {
    let mut tokens: Vec<Vec<u8>> = (0x21u8..=0x7e).map(|b| vec![b]).collect();
    tokens.extend([
        b" ".to_vec(),
        b"\n".to_vec(),
        b" the".to_vec(),
        b" hello".to_vec(),
        b"ing".to_vec(),
        "é".as_bytes().to_vec(),
        b"<|endoftext|>".to_vec(),
    ]);
    tokens
}

/// The tensors whisper.cpp expects, written out independently of the
/// converter: (name, PyTorch dims, ggml type code) in state-dict order.
fn expected_tensors(dims: Dims) -> Vec<(String, Vec<u64>, i32)> {
    let d = dims.d;
    let mut t: Vec<(String, Vec<u64>, i32)> = Vec::new();
    let mut push = |name: String, shape: &[u64], ty: i32| t.push((name, shape.to_vec(), ty));
    push(
        "encoder.positional_embedding".into(),
        &[dims.audio_ctx, d],
        0,
    );
    push("encoder.conv1.weight".into(), &[d, dims.mels, 3], 1);
    push("encoder.conv1.bias".into(), &[d, 1], 0);
    push("encoder.conv2.weight".into(), &[d, d, 3], 1);
    push("encoder.conv2.bias".into(), &[d, 1], 0);
    let attention = |push: &mut dyn FnMut(String, &[u64], i32), p: &str| {
        push(format!("{p}.query.weight"), &[d, d], 1);
        push(format!("{p}.query.bias"), &[d], 0);
        push(format!("{p}.key.weight"), &[d, d], 1);
        push(format!("{p}.value.weight"), &[d, d], 1);
        push(format!("{p}.value.bias"), &[d], 0);
        push(format!("{p}.out.weight"), &[d, d], 1);
        push(format!("{p}.out.bias"), &[d], 0);
    };
    let norm = |push: &mut dyn FnMut(String, &[u64], i32), p: &str| {
        push(format!("{p}.weight"), &[d], 0);
        push(format!("{p}.bias"), &[d], 0);
    };
    let mlp = |push: &mut dyn FnMut(String, &[u64], i32), p: &str| {
        push(format!("{p}.mlp.0.weight"), &[4 * d, d], 1);
        push(format!("{p}.mlp.0.bias"), &[4 * d], 0);
        push(format!("{p}.mlp.2.weight"), &[d, 4 * d], 1);
        push(format!("{p}.mlp.2.bias"), &[d], 0);
        norm(push, &format!("{p}.mlp_ln"));
    };
    for layer in 0..dims.audio_layers {
        let p = format!("encoder.blocks.{layer}");
        attention(&mut push, &format!("{p}.attn"));
        norm(&mut push, &format!("{p}.attn_ln"));
        mlp(&mut push, &p);
    }
    norm(&mut push, "encoder.ln_post");
    push(
        "decoder.positional_embedding".into(),
        &[dims.text_ctx, d],
        0,
    );
    push("decoder.token_embedding.weight".into(), &[dims.vocab, d], 1);
    for layer in 0..dims.text_layers {
        let p = format!("decoder.blocks.{layer}");
        attention(&mut push, &format!("{p}.attn"));
        norm(&mut push, &format!("{p}.attn_ln"));
        attention(&mut push, &format!("{p}.cross_attn"));
        norm(&mut push, &format!("{p}.cross_attn_ln"));
        mlp(&mut push, &p);
    }
    norm(&mut push, "decoder.ln");
    t
}

/// Where each output tensor's values come from: (CT2 name, CT2 shape, first element).
fn expected_source(name: &str, dims: Dims) -> (String, Vec<u64>, u64) {
    let d = dims.d;
    let fixed = [
        (
            "encoder.positional_embedding",
            "encoder/position_encodings/encodings",
            vec![dims.audio_ctx, d],
        ),
        (
            "decoder.positional_embedding",
            "decoder/position_encodings/encodings",
            vec![dims.text_ctx, d],
        ),
        (
            "decoder.token_embedding.weight",
            "decoder/embeddings/weight",
            vec![dims.vocab, d],
        ),
        (
            "encoder.conv1.weight",
            "encoder/conv1/weight",
            vec![d, dims.mels, 3],
        ),
        ("encoder.conv1.bias", "encoder/conv1/bias", vec![d]),
        (
            "encoder.conv2.weight",
            "encoder/conv2/weight",
            vec![d, d, 3],
        ),
        ("encoder.conv2.bias", "encoder/conv2/bias", vec![d]),
        (
            "encoder.ln_post.weight",
            "encoder/layer_norm/gamma",
            vec![d],
        ),
        ("encoder.ln_post.bias", "encoder/layer_norm/beta", vec![d]),
        ("decoder.ln.weight", "decoder/layer_norm/gamma", vec![d]),
        ("decoder.ln.bias", "decoder/layer_norm/beta", vec![d]),
    ];
    if let Some((_, ct2, shape)) = fixed.iter().find(|(ours, _, _)| *ours == name) {
        return (ct2.to_string(), shape.clone(), 0);
    }
    // encoder.blocks.N.rest / decoder.blocks.N.rest
    let mut parts = name.splitn(4, '.');
    let (side, _, layer, rest) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let p = format!("{side}/layer_{layer}");
    let (ct2, shape, first): (String, Vec<u64>, u64) = match rest {
        "attn.query.weight" => (
            format!("{p}/self_attention/linear_0/weight"),
            vec![3 * d, d],
            0,
        ),
        "attn.key.weight" => (
            format!("{p}/self_attention/linear_0/weight"),
            vec![3 * d, d],
            d * d,
        ),
        "attn.value.weight" => (
            format!("{p}/self_attention/linear_0/weight"),
            vec![3 * d, d],
            2 * d * d,
        ),
        "attn.query.bias" => (format!("{p}/self_attention/linear_0/bias"), vec![3 * d], 0),
        "attn.value.bias" => (
            format!("{p}/self_attention/linear_0/bias"),
            vec![3 * d],
            2 * d,
        ),
        "attn.out.weight" => (format!("{p}/self_attention/linear_1/weight"), vec![d, d], 0),
        "attn.out.bias" => (format!("{p}/self_attention/linear_1/bias"), vec![d], 0),
        "attn_ln.weight" => (format!("{p}/self_attention/layer_norm/gamma"), vec![d], 0),
        "attn_ln.bias" => (format!("{p}/self_attention/layer_norm/beta"), vec![d], 0),
        "cross_attn.query.weight" => (format!("{p}/attention/linear_0/weight"), vec![d, d], 0),
        "cross_attn.query.bias" => (format!("{p}/attention/linear_0/bias"), vec![d], 0),
        "cross_attn.key.weight" => (format!("{p}/attention/linear_1/weight"), vec![2 * d, d], 0),
        "cross_attn.value.weight" => (
            format!("{p}/attention/linear_1/weight"),
            vec![2 * d, d],
            d * d,
        ),
        "cross_attn.value.bias" => (format!("{p}/attention/linear_1/bias"), vec![2 * d], d),
        "cross_attn.out.weight" => (format!("{p}/attention/linear_2/weight"), vec![d, d], 0),
        "cross_attn.out.bias" => (format!("{p}/attention/linear_2/bias"), vec![d], 0),
        "cross_attn_ln.weight" => (format!("{p}/attention/layer_norm/gamma"), vec![d], 0),
        "cross_attn_ln.bias" => (format!("{p}/attention/layer_norm/beta"), vec![d], 0),
        "mlp.0.weight" => (format!("{p}/ffn/linear_0/weight"), vec![4 * d, d], 0),
        "mlp.0.bias" => (format!("{p}/ffn/linear_0/bias"), vec![4 * d], 0),
        "mlp.2.weight" => (format!("{p}/ffn/linear_1/weight"), vec![d, 4 * d], 0),
        "mlp.2.bias" => (format!("{p}/ffn/linear_1/bias"), vec![d], 0),
        "mlp_ln.weight" => (format!("{p}/ffn/layer_norm/gamma"), vec![d], 0),
        "mlp_ln.bias" => (format!("{p}/ffn/layer_norm/beta"), vec![d], 0),
        other => panic!("unexpected tensor {other}"),
    };
    (ct2, shape, first)
}

/// File size from first principles: header, mel bank, vocabulary, tensors.
fn expected_file_size(dims: Dims, tokens: &[Vec<u8>]) -> u64 {
    let header = 4 + 11 * 4;
    let mel = 4 + 4 + dims.mels * 201 * 4;
    let vocab = 4 + tokens.iter().map(|t| 4 + t.len() as u64).sum::<u64>();
    let tensors: u64 = expected_tensors(dims)
        .iter()
        .map(|(name, shape, ty)| {
            let element = if *ty == 0 { 4 } else { 2 };
            12 + 4 * shape.len() as u64
                + name.len() as u64
                + shape.iter().product::<u64>() * element
        })
        .sum();
    header + mel + vocab + tensors
}

struct Converted {
    _dir: tempfile::TempDir,
    out: PathBuf,
    summary: ConvertSummary,
    progress: Vec<(u64, u64)>,
}

fn convert_builder(builder: &Ct2Builder, dims: Dims) -> Result<Converted, (ConvertError, PathBuf)> {
    let dir = tempfile::tempdir().unwrap();
    let ct2_dir = dir.path().join("ct2");
    builder.write_dir(&ct2_dir, dims.vocab);
    let out = dir.path().join("out").join("ggml-test.bin");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut progress = Vec::new();
    match convert_ct2_dir(&ct2_dir, &out, &mut |done, total| {
        progress.push((done, total))
    }) {
        Ok(summary) => Ok(Converted {
            _dir: dir,
            out,
            summary,
            progress,
        }),
        Err(error) => {
            // A failed conversion leaves nothing behind: no output, no temp file.
            let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
            Err((error, ct2_dir))
        }
    }
}

fn convert_error(builder: &Ct2Builder) -> (ConvertError, PathBuf) {
    match convert_builder(builder, SMALL) {
        Ok(_) => panic!("conversion unexpectedly succeeded"),
        Err(failure) => failure,
    }
}

fn check_layout_matches(layout: &GgmlLayout, dims: Dims) {
    let expected = expected_tensors(dims);
    let names: Vec<&str> = layout.tensors.iter().map(|t| t.name.as_str()).collect();
    let expected_names: Vec<&str> = expected.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, expected_names);
    for (tensor, (name, shape, ty)) in layout.tensors.iter().zip(&expected) {
        let ggml_dims: Vec<i32> = shape.iter().rev().map(|&d| d as i32).collect();
        assert_eq!(tensor.ggml_dims, ggml_dims, "{name}");
        assert_eq!(tensor.ggml_type, *ty, "{name}");
    }
}

#[test]
fn converts_a_synthetic_model_exactly() {
    let dims = SMALL;
    let converted = convert_builder(&Ct2Builder::whisper(dims, CT2_F16), dims).unwrap();
    let tokens = expected_token_bytes();

    let size = std::fs::metadata(&converted.out).unwrap().len();
    assert_eq!(size, expected_file_size(dims, &tokens));
    assert_eq!(converted.summary.bytes_written, size);
    assert_eq!(converted.summary.n_tensors, 5 + 2 + 2 + 15 * 2 + 24 * 3 + 2);

    let header = read_ggml_header(&converted.out).unwrap();
    let expected_header = GgmlHeader {
        n_vocab: 270,
        n_audio_ctx: 6,
        n_audio_state: 8,
        n_audio_head: 2,
        n_audio_layer: 2,
        n_text_ctx: 5,
        n_text_state: 8,
        n_text_head: 2,
        n_text_layer: 3,
        n_mels: 4,
        ftype: 1,
    };
    assert_eq!(header, expected_header);
    assert_eq!(converted.summary.header, expected_header);
    assert_eq!(converted.summary.n_text_tokens as usize, tokens.len());
    assert!(!converted.summary.multilingual);

    let layout = layout::read(&converted.out);
    assert_eq!(layout.header, expected_header);
    assert_eq!((layout.mel_rows, layout.mel_cols), (4, 201));
    assert_eq!(layout.mel, mel::slaney_mel_filters(16_000, 400, 4));
    assert_eq!(layout.tokens, tokens);
    check_layout_matches(&layout, dims);
}

#[test]
fn every_tensor_holds_the_right_slice_of_its_source() {
    for dtype in [CT2_F16, CT2_F32, CT2_BF16] {
        let dims = SMALL;
        let converted = convert_builder(&Ct2Builder::whisper(dims, dtype), dims).unwrap();
        let layout = layout::read(&converted.out);
        for tensor in &layout.tensors {
            let (ct2_name, ct2_shape, first) = expected_source(&tensor.name, dims);
            let values = tensor.as_f32();
            let expected: Vec<f32> = (0..values.len() as u64)
                .map(|i| source_value(&ct2_name, &ct2_shape, first + i))
                .collect();
            assert_eq!(values, expected, "{} (dtype {dtype})", tensor.name);
        }
    }
}

#[test]
fn float32_and_float16_sources_give_identical_files() {
    let dims = SMALL;
    let from_f16 = convert_builder(&Ct2Builder::whisper(dims, CT2_F16), dims).unwrap();
    let from_f32 = convert_builder(&Ct2Builder::whisper(dims, CT2_F32), dims).unwrap();
    assert_eq!(
        std::fs::read(&from_f16.out).unwrap(),
        std::fs::read(&from_f32.out).unwrap()
    );
}

#[test]
fn progress_rises_to_the_total() {
    let dims = SMALL;
    let converted = convert_builder(&Ct2Builder::whisper(dims, CT2_F16), dims).unwrap();
    let total = converted.summary.bytes_written;
    let progress = &converted.progress;
    assert_eq!(progress.first(), Some(&(0, total)));
    assert_eq!(progress.last(), Some(&(total, total)));
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(progress
        .iter()
        .all(|&(done, t)| t == total && done <= total));
    assert!(
        progress.len() > 10,
        "progress reported only {} times",
        progress.len()
    );
}

#[test]
fn overwrites_an_existing_output_and_leaves_no_temp_file() {
    let dims = SMALL;
    let converted = convert_builder(&Ct2Builder::whisper(dims, CT2_F16), dims).unwrap();
    let ct2_dir = converted._dir.path().join("ct2");
    std::fs::write(&converted.out, b"stale").unwrap();
    convert_ct2_dir(&ct2_dir, &converted.out, &mut |_, _| {}).unwrap();
    assert_eq!(
        std::fs::metadata(&converted.out).unwrap().len(),
        converted.summary.bytes_written
    );
    let entries: Vec<_> = std::fs::read_dir(converted.out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("ggml-test.bin")]);
}

#[test]
fn missing_model_bin_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let error =
        convert_ct2_dir(dir.path(), &dir.path().join("out.bin"), &mut |_, _| {}).unwrap_err();
    match &error {
        ConvertError::MissingFile { path } => assert_eq!(path, &dir.path().join("model.bin")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.to_string().contains("model.bin"), "{error}");
    assert!(!dir.path().join("out.bin").exists());
}

#[test]
fn missing_tokenizer_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let builder = Ct2Builder::whisper(SMALL, CT2_F16);
    std::fs::write(dir.path().join("model.bin"), builder.bytes()).unwrap();
    let error =
        convert_ct2_dir(dir.path(), &dir.path().join("out.bin"), &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(&error, ConvertError::MissingFile { path } if path.ends_with("tokenizer.json")),
        "{error:?}"
    );
}

#[test]
fn other_files_are_not_ct2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.bin"), b"<html>not a model</html>").unwrap();
    let error =
        convert_ct2_dir(dir.path(), &dir.path().join("out.bin"), &mut |_, _| {}).unwrap_err();
    assert!(matches!(error, ConvertError::NotCt2 { .. }), "{error:?}");
    assert!(error.to_string().contains("model.bin"), "{error}");

    std::fs::write(dir.path().join("model.bin"), b"").unwrap();
    let error =
        convert_ct2_dir(dir.path(), &dir.path().join("out.bin"), &mut |_, _| {}).unwrap_err();
    assert!(matches!(error, ConvertError::NotCt2 { .. }), "{error:?}");
}

#[test]
fn unsupported_versions_and_specs_are_rejected() {
    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    builder.binary_version = 5;
    let (error, _) = convert_error(&builder);
    assert!(
        matches!(
            error,
            ConvertError::UnsupportedBinaryVersion { version: 5, .. }
        ),
        "{error:?}"
    );

    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    builder.spec = "TransformerSpec".into();
    let (error, _) = convert_error(&builder);
    assert!(
        matches!(&error, ConvertError::UnsupportedSpec { spec, .. } if spec == "TransformerSpec")
    );
    assert!(error.to_string().contains("model.bin"), "{error}");

    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    builder.revision = 2;
    let (error, _) = convert_error(&builder);
    assert!(matches!(
        error,
        ConvertError::UnsupportedSpec { revision: 2, .. }
    ));
}

#[test]
fn truncated_files_are_reported_with_their_path() {
    let builder = Ct2Builder::whisper(SMALL, CT2_F16);
    let full = builder.bytes();
    // Cut inside the index, inside tensor data, and just before the aliases end.
    for cut in [5usize, 30, full.len() / 2, full.len() - 3] {
        let dir = tempfile::tempdir().unwrap();
        builder.write_dir(dir.path(), SMALL.vocab);
        let model = dir.path().join("model.bin");
        std::fs::write(&model, &full[..cut]).unwrap();
        let error =
            convert_ct2_dir(dir.path(), &dir.path().join("out.bin"), &mut |_, _| {}).unwrap_err();
        match &error {
            ConvertError::Truncated { path, .. } => assert_eq!(path, &model),
            other => panic!("cut at {cut}: unexpected {other:?}"),
        }
        assert!(error.to_string().contains("truncated"), "{error}");
        assert!(!dir.path().join("out.bin").exists());
    }
}

#[test]
fn a_corrupt_size_field_is_not_ct2() {
    let builder = Ct2Builder::whisper(SMALL, CT2_F16);
    let mut bytes = builder.bytes();
    // The first variable (encoder/num_heads, an int16 scalar) declares 2
    // bytes right after its rank and dtype; claim 3 instead.
    let name_end = 4 + 2 + 12 + 4 + 4 + 2 + "encoder/num_heads".len() + 1;
    assert_eq!(&bytes[name_end..name_end + 2], &[0, CT2_I16]);
    bytes[name_end + 2] = 3;
    let dir = tempfile::tempdir().unwrap();
    builder.write_dir(dir.path(), SMALL.vocab);
    std::fs::write(dir.path().join("model.bin"), bytes).unwrap();
    let error =
        convert_ct2_dir(dir.path(), &dir.path().join("out.bin"), &mut |_, _| {}).unwrap_err();
    assert!(matches!(error, ConvertError::NotCt2 { .. }), "{error:?}");
    assert!(error.to_string().contains("encoder/num_heads"), "{error}");
}

#[test]
fn missing_tensors_are_named() {
    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    builder.remove("decoder/layer_1/ffn/linear_1/bias");
    let (error, ct2_dir) = convert_error(&builder);
    match &error {
        ConvertError::MissingTensor { path, name } => {
            assert_eq!(path, &ct2_dir.join("model.bin"));
            assert_eq!(name, "decoder/layer_1/ffn/linear_1/bias");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error
        .to_string()
        .contains("decoder/layer_1/ffn/linear_1/bias"));

    // A missing last layer piece is not mistaken for a shallower model.
    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    builder.remove("encoder/layer_1/self_attention/linear_0/weight");
    let (error, _) = convert_error(&builder);
    assert!(
        matches!(&error, ConvertError::MissingTensor { name, .. } if name == "encoder/layer_1/self_attention/linear_0/weight"),
        "{error:?}"
    );

    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    builder.remove("encoder/num_heads");
    let (error, _) = convert_error(&builder);
    assert!(
        matches!(&error, ConvertError::MissingTensor { name, .. } if name == "encoder/num_heads")
    );
}

#[test]
fn wrong_shapes_are_named() {
    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    builder.remove("encoder/conv2/weight");
    builder.tensor("encoder/conv2/weight", &[8, 8, 5], CT2_F16);
    let (error, _) = convert_error(&builder);
    match &error {
        ConvertError::WrongShape {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "encoder/conv2/weight");
            assert_eq!(expected, &vec![8, 8, 3]);
            assert_eq!(found, &vec![8, 8, 5]);
        }
        other => panic!("unexpected {other:?}"),
    }

    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    builder.remove("decoder/layer_0/attention/linear_1/weight");
    builder.tensor(
        "decoder/layer_0/attention/linear_1/weight",
        &[3 * 8, 8],
        CT2_F16,
    );
    let (error, _) = convert_error(&builder);
    assert!(
        matches!(&error, ConvertError::WrongShape { name, .. } if name == "decoder/layer_0/attention/linear_1/weight"),
        "{error:?}"
    );
}

#[test]
fn quantized_models_are_refused() {
    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    builder.remove("encoder/layer_0/ffn/linear_0/weight");
    builder.tensor("encoder/layer_0/ffn/linear_0/weight", &[32, 8], CT2_I8);
    let (error, _) = convert_error(&builder);
    assert!(
        matches!(&error, ConvertError::UnsupportedDtype { dtype, .. } if dtype == "int8"),
        "{error:?}"
    );
}

#[test]
fn a_non_zero_key_bias_is_refused() {
    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    let bias = builder.variable_mut("decoder/layer_2/self_attention/linear_0/bias");
    // Element 8 is the first key element (d = 8); 0x3c00 is 1.0 in f16.
    bias.data[16..18].copy_from_slice(&0x3c00u16.to_le_bytes());
    let (error, _) = convert_error(&builder);
    assert!(
        matches!(&error, ConvertError::InvalidModel { reason, .. } if reason.contains("decoder/layer_2/self_attention/linear_0/bias")),
        "{error:?}"
    );
}

#[test]
fn an_untied_output_projection_is_refused() {
    let mut builder = Ct2Builder::whisper(SMALL, CT2_F16);
    builder.aliases.clear();
    builder.tensor("decoder/projection/weight", &[SMALL.vocab, 8], CT2_F16);
    let (error, _) = convert_error(&builder);
    assert!(
        matches!(error, ConvertError::InvalidModel { .. }),
        "{error:?}"
    );
}

#[test]
fn a_tie_aliased_the_other_way_round_converts_the_same() {
    let dims = SMALL;
    let reference = convert_builder(&Ct2Builder::whisper(dims, CT2_F16), dims).unwrap();
    let mut builder = Ct2Builder::whisper(dims, CT2_F16);
    let embedding = builder.variable_mut("decoder/embeddings/weight");
    embedding.name = "decoder/projection/weight".into();
    builder.aliases = vec![(
        "decoder/embeddings/weight".into(),
        "decoder/projection/weight".into(),
    )];
    let converted = convert_builder(&builder, dims).unwrap();
    // The data came from "decoder/embeddings/weight" in the reference, so
    // the token embedding differs in value (seeded by name) but not layout.
    assert_eq!(converted.summary, reference.summary);
}

#[test]
fn header_reader_rejects_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.bin");
    assert!(matches!(
        read_ggml_header(&missing),
        Err(ConvertError::MissingFile { path }) if path == missing
    ));

    let not_ggml = dir.path().join("model.bin");
    std::fs::write(&not_ggml, Ct2Builder::whisper(SMALL, CT2_F16).bytes()).unwrap();
    let error = read_ggml_header(&not_ggml).unwrap_err();
    assert!(
        matches!(error, ConvertError::NotGgml { magic: 6, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("model.bin"));

    let short = dir.path().join("short.bin");
    std::fs::write(&short, [0x6c, 0x6d, 0x67, 0x67, 1, 0, 0, 0]).unwrap();
    assert!(matches!(
        read_ggml_header(&short),
        Err(ConvertError::Truncated { path, .. }) if path == short
    ));
}

/// Expected tensor list for a real Whisper model with the given dimensions.
fn real_dims(d: u64, layers: u64, vocab: u64) -> Dims {
    Dims {
        d,
        heads: 0,
        audio_layers: layers,
        text_layers: layers,
        mels: 80,
        vocab,
        audio_ctx: 1500,
        text_ctx: 448,
    }
}

/// Runs only when `HARK_CT2_TINY_DIR` points at faster-whisper's tiny.en.
#[test]
fn converts_real_tiny_en_to_the_reference_size() {
    let Some(ct2_dir) = std::env::var_os("HARK_CT2_TINY_DIR") else {
        println!("skipped: set HARK_CT2_TINY_DIR to a CTranslate2 tiny.en directory to run");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ggml-tiny.en.bin");
    let started = std::time::Instant::now();
    let summary = convert_ct2_dir(Path::new(&ct2_dir), &out, &mut |_, _| {}).unwrap();
    println!("converted tiny.en in {:?}", started.elapsed());

    assert_eq!(std::fs::metadata(&out).unwrap().len(), 77_704_715);
    assert_eq!(summary.bytes_written, 77_704_715);
    let header = read_ggml_header(&out).unwrap();
    assert_eq!(
        header,
        GgmlHeader {
            n_vocab: 51864,
            n_audio_ctx: 1500,
            n_audio_state: 384,
            n_audio_head: 6,
            n_audio_layer: 4,
            n_text_ctx: 448,
            n_text_state: 384,
            n_text_head: 6,
            n_text_layer: 4,
            n_mels: 80,
            ftype: 1,
        }
    );
    assert_eq!(summary.n_tensors, 167);
    assert_eq!(summary.n_text_tokens, 50257);

    let layout = layout::read(&out);
    check_layout_matches(&layout, real_dims(384, 4, 51864));
    assert_eq!(layout.tokens[0], b"!");
    assert_eq!(layout.tokens[256], b" t");
    assert_eq!(layout.tokens[262], b" the");
    assert_eq!(layout.tokens[50256], b"<|endoftext|>");
    let mel = &layout.mel;
    assert!((f64::from(mel[1]) - 0.024_862_594_902_515_41).abs() < 1e-12);
}

/// Runs only when `HARK_CT2_BASE_DIR` points at faster-whisper's base (multilingual).
#[test]
fn converts_real_base_to_the_reference_size() {
    let Some(ct2_dir) = std::env::var_os("HARK_CT2_BASE_DIR") else {
        println!("skipped: set HARK_CT2_BASE_DIR to a CTranslate2 base directory to run");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ggml-base.bin");
    let summary = convert_ct2_dir(Path::new(&ct2_dir), &out, &mut |_, _| {}).unwrap();
    assert_eq!(summary.bytes_written, 147_951_465);
    assert!(summary.multilingual);
    assert_eq!(summary.n_tensors, 245);
    let layout = layout::read(&out);
    check_layout_matches(&layout, real_dims(512, 6, 51865));
    assert_eq!(layout.tokens.len(), 50257);
    assert_eq!(layout.tokens[50256], b"");
}
