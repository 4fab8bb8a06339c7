//! Sentence embeddings with all-MiniLM-L6-v2 (BERT, 384 dimensions): mean
//! pooling over the attention mask, then L2 normalisation, as
//! sentence-transformers does.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use super::{corrupt, need, pool, ModelError};

/// Batch embedding of texts into unit vectors.
pub trait Embedder: Send + Sync {
    fn dim(&self) -> usize;
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError>;
}

/// Sentences per forward pass.
const CHUNK: usize = 8;

/// The model's own limit (sentence-transformers' max_seq_length).
const MAX_TOKENS: usize = 256;

pub struct BertEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    pool: rayon::ThreadPool,
    /// One batch at a time: the pool is the thread budget.
    busy: Mutex<()>,
}

impl BertEmbedder {
    /// Loads `dir/{config.json, tokenizer.json, model.safetensors}`.
    pub fn load(dir: &Path, threads: usize) -> Result<BertEmbedder, ModelError> {
        let cfg_path = dir.join("config.json");
        let tok_path = dir.join("tokenizer.json");
        let weights = dir.join("model.safetensors");
        let cfg_text =
            std::fs::read_to_string(need(&cfg_path)?).map_err(|e| corrupt(&cfg_path, e))?;
        let config: Config = serde_json::from_str(&cfg_text).map_err(|e| corrupt(&cfg_path, e))?;
        let mut tokenizer =
            Tokenizer::from_file(need(&tok_path)?).map_err(|e| corrupt(&tok_path, e))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| corrupt(&tok_path, e))?;
        let tensors = read_safetensors_f32(need(&weights)?)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = BertModel::load(vb, &config).map_err(|e| corrupt(&weights, e))?;
        Ok(BertEmbedder {
            model,
            tokenizer,
            dim: config.hidden_size,
            pool: pool(threads)?,
            busy: Mutex::new(()),
        })
    }

    fn run(&self, texts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(candle_core::Error::wrap)?;
        let n = enc.len();
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            enc.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (n, len), &dev)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), (n, len), &dev)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (n, len), &dev)?;
        let out = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, dim)
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = out.broadcast_mul(&m)?.sum(1)?; // (n, dim)
        let counts = m.sum(1)?.clamp(1e-9, f32::MAX)?; // (n, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

impl Embedder for BertEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        // Small chunks bound the activations on a 512 MB board; taking the
        // texts longest first (as sentence-transformers does) keeps similar
        // lengths together, so little of each chunk is padding.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let mut out = vec![Vec::new(); texts.len()];
        for idx in order.chunks(CHUNK) {
            let chunk: Vec<&str> = idx.iter().map(|&i| texts[i]).collect();
            let v = self
                .pool
                .install(|| self.run(&chunk))
                .map_err(|e| ModelError::Inference(e.to_string()))?;
            for (&i, e) in idx.iter().zip(v) {
                out[i] = e;
            }
        }
        Ok(out)
    }
}

/// Reads an F32 safetensors file tensor by tensor straight into owned
/// buffers, so loading peaks at the model's size instead of twice it (a
/// whole-file buffer or touched mmap pages plus the copies).
fn read_safetensors_f32(path: &Path) -> Result<HashMap<String, Tensor>, ModelError> {
    let bad = |why: String| corrupt(path, why);
    let mut f = std::fs::File::open(path).map_err(|e| corrupt(path, e))?;
    let file_len = f.metadata().map_err(|e| corrupt(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|e| corrupt(path, e))?;
    let hlen = u64::from_le_bytes(n);
    if hlen > 16 << 20 || 8 + hlen > file_len {
        return Err(bad(format!("header length {hlen} does not fit the file")));
    }
    let mut header = vec![0u8; hlen as usize];
    f.read_exact(&mut header).map_err(|e| corrupt(path, e))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("bad header: {e}")))?;
    let base = 8 + hlen;
    let mut out = HashMap::new();
    let mut chunk = vec![0u8; 1 << 16];
    for (name, info) in header.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        if info["dtype"] != "F32" {
            // Buffers such as position_ids (I64) are not weights; a missing
            // weight is reported by the model loader by name.
            continue;
        }
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            })
            .unwrap_or_default();
        let (start, end) = match info["data_offsets"].as_array().map(|a| a.as_slice()) {
            Some([a, b]) => (a.as_u64().unwrap_or(u64::MAX), b.as_u64().unwrap_or(0)),
            _ => return Err(bad(format!("tensor {name} has no data_offsets"))),
        };
        let count: usize = shape.iter().product();
        if end < start || base + end > file_len || (end - start) != 4 * count as u64 {
            return Err(bad(format!("tensor {name} does not fit the file")));
        }
        f.seek(SeekFrom::Start(base + start))
            .map_err(|e| corrupt(path, e))?;
        let mut data: Vec<f32> = Vec::with_capacity(count);
        let mut left = (end - start) as usize;
        while left > 0 {
            let take = left.min(chunk.len());
            f.read_exact(&mut chunk[..take])
                .map_err(|e| corrupt(path, e))?;
            data.extend(
                chunk[..take]
                    .as_chunks::<4>()
                    .0
                    .iter()
                    .map(|b| f32::from_le_bytes(*b)),
            );
            left -= take;
        }
        let t = Tensor::from_vec(data, shape, &Device::Cpu).map_err(|e| corrupt(path, e))?;
        out.insert(name.clone(), t);
    }
    Ok(out)
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}
