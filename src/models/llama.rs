//! Quantized llama forward pass for the local chat model.
//!
//! Adapted from candle-transformers 0.10.2 `models::quantized_llama`
//! (Apache-2.0/MIT, the Hugging Face candle authors), dense models only, with
//! one change that matters on a 512 MB board: the token embedding stays
//! quantized. Upstream dequantizes the whole `token_embd` table to f32 for the
//! lookup (49152 x 576 x 4 = 113 MB for SmolLM2-135M) although it keeps the
//! quantized copy anyway for the tied output projection; here a lookup
//! dequantizes only the rows of the tokens being fed (a few hundred bytes per
//! token) from the one quantized table both uses share.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use half::f16;

/// Longest sequence the rotary tables cover.
pub const MAX_SEQ_LEN: usize = 4096;

/// Longest piece of a prompt fed in one forward pass.
pub const PREFILL_CHUNK: usize = 256;

/// Q8_0 block: f16 scale + 32 signed bytes.
const Q8_0_BLOCK: usize = 32;
const Q8_0_BYTES: usize = 2 + Q8_0_BLOCK;

/// Token embedding table kept in its GGUF quantization.
pub(super) struct QEmbedding {
    table: Arc<QTensor>,
    vocab: usize,
    dim: usize,
}

impl QEmbedding {
    pub(super) fn new(table: Arc<QTensor>) -> Result<Self> {
        let (vocab, dim) = table.shape().dims2()?;
        if table.dtype() != GgmlDType::Q8_0 && table.dtype() != GgmlDType::F32 {
            candle_core::bail!(
                "token_embd.weight is {:?}; the local model loader reads Q8_0 or F32 \
                 (scripts/fetch-models produces Q8_0)",
                table.dtype()
            );
        }
        if table.dtype() == GgmlDType::Q8_0 && dim % Q8_0_BLOCK != 0 {
            candle_core::bail!("token_embd.weight row length {dim} is not a multiple of 32");
        }
        Ok(Self { table, vocab, dim })
    }

    /// `ids` (batch, seq) of u32 → (batch, seq, dim) f32.
    pub(super) fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let ids = ids.flatten_all()?.to_vec1::<u32>()?;
        let data = self.table.data()?;
        let mut out = Vec::with_capacity(ids.len() * self.dim);
        for &id in &ids {
            let id = id as usize;
            if id >= self.vocab {
                candle_core::bail!("token id {id} outside the vocabulary ({})", self.vocab);
            }
            match self.table.dtype() {
                GgmlDType::Q8_0 => {
                    let row_bytes = self.dim / Q8_0_BLOCK * Q8_0_BYTES;
                    let row = &data[id * row_bytes..(id + 1) * row_bytes];
                    for block in row.as_chunks::<Q8_0_BYTES>().0 {
                        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                        out.extend(block[2..].iter().map(|&q| q as i8 as f32 * d));
                    }
                }
                _ => {
                    let row = &data[id * self.dim * 4..(id + 1) * self.dim * 4];
                    out.extend(
                        row.as_chunks::<4>()
                            .0
                            .iter()
                            .map(|c| f32::from_le_bytes(*c)),
                    );
                }
            }
        }
        Tensor::from_vec(out, (b, s, self.dim), &Device::Cpu)
    }
}

pub(super) struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(super) fn new(weight: QTensor, eps: f32) -> Result<Self> {
        let weight = weight.dequantize(&Device::Cpu)?;
        Ok(Self { weight, eps })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }
}

struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    w1: QMatMul,
    w2: QMatMul,
    w3: QMatMul,
    attention_norm: RmsNorm,
    ffn_norm: RmsNorm,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    kv_cache: Option<(Tensor, Tensor)>,
}

/// Scaled dot-product attention of `q` (b, heads, seq, head_dim) over `k`
/// and `v` (b, kv_heads, kv_len, head_dim), each kv head shared by `n_rep`
/// query heads; `mask` (seq, kv_len) is 1 where a query may not look.
pub(super) fn attend(
    q: &Tensor,
    k: Tensor,
    v: Tensor,
    n_rep: usize,
    mask: Option<&Tensor>,
    neg_inf: &Tensor,
) -> Result<Tensor> {
    let head_dim = q.dim(3)?;
    let k = repeat_kv(k, n_rep)?;
    let v = repeat_kv(v, n_rep)?;
    let att = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?;
    let att = match mask {
        None => att,
        Some(mask) => {
            let mask = mask.broadcast_as(att.shape())?;
            mask.where_cond(&neg_inf.broadcast_as(att.shape().dims())?, &att)?
        }
    };
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    att.matmul(&v.contiguous()?)
}

/// Repeat each key/value head `n_rep` times (grouped-query attention).
fn repeat_kv(xs: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(xs);
    }
    let (b, n_kv, seq, head_dim) = xs.dims4()?;
    Tensor::cat(&vec![&xs; n_rep], 2)?.reshape((b, n_kv * n_rep, seq, head_dim))
}

impl Layer {
    fn attention(
        &mut self,
        x: &Tensor,
        mask: Option<&Tensor>,
        index_pos: usize,
        rope: &(Tensor, Tensor),
        neg_inf: &Tensor,
    ) -> Result<Tensor> {
        let (b, seq_len, n_embd) = x.dims3()?;
        let q = self.wq.forward(x)?;
        let k = self.wk.forward(x)?;
        let v = self.wv.forward(x)?;
        let q = q
            .reshape((b, seq_len, self.n_head, self.head_dim))?
            .transpose(1, 2)?;
        let k = k
            .reshape((b, seq_len, self.n_kv_head, self.head_dim))?
            .transpose(1, 2)?;
        let v = v
            .reshape((b, seq_len, self.n_kv_head, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let cos = rope.0.narrow(0, index_pos, seq_len)?;
        let sin = rope.1.narrow(0, index_pos, seq_len)?;
        let q = candle_nn::rotary_emb::rope_i(&q.contiguous()?, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope_i(&k.contiguous()?, &cos, &sin)?;
        let (k, v) = match &self.kv_cache {
            Some((kc, vc)) if index_pos > 0 => {
                (Tensor::cat(&[kc, &k], 2)?, Tensor::cat(&[vc, &v], 2)?)
            }
            _ => (k, v),
        };
        self.kv_cache = Some((k.clone(), v.clone()));
        let y = attend(&q, k, v, self.n_head / self.n_kv_head, mask, neg_inf)?;
        let y = y.transpose(1, 2)?.reshape(&[b, seq_len, n_embd])?;
        self.wo.forward(&y)
    }

    fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.w1.forward(x)?;
        let up = self.w3.forward(x)?;
        self.w2.forward(&(candle_nn::ops::silu(&gate)? * up)?)
    }
}

/// A dense llama-architecture model from a GGUF file.
pub struct Llama {
    embed: QEmbedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    rope: (Tensor, Tensor),
    neg_inf: Tensor,
    masks: HashMap<(usize, usize), Tensor>,
}

pub(super) fn rope_tables(head_dim: usize, base: f32) -> Result<(Tensor, Tensor)> {
    let theta: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let theta = Tensor::new(theta.as_slice(), &Device::Cpu)?;
    let idx = Tensor::arange(0, MAX_SEQ_LEN as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((MAX_SEQ_LEN, 1))?
        .matmul(&theta.reshape((1, theta.elem_count()))?)?;
    Ok((idx.cos()?, idx.sin()?))
}

/// Causal mask (seq_len, index_pos + seq_len): 1 where a query may not look.
fn causal_mask(seq_len: usize, index_pos: usize) -> Result<Tensor> {
    let kv_len = index_pos + seq_len;
    let mask: Vec<u8> = (0..seq_len)
        .flat_map(|i| (0..kv_len).map(move |j| u8::from(j > index_pos + i)))
        .collect();
    Tensor::from_slice(&mask, (seq_len, kv_len), &Device::Cpu)
}

/// The quantized token table and the output layer: `output.weight`, or
/// the same table when the model ties them (one copy in memory).
pub(super) fn embedding_and_output<R: std::io::Seek + std::io::Read>(
    ct: &gguf_file::Content,
    reader: &mut R,
) -> Result<(QEmbedding, QMatMul)> {
    let dev = &Device::Cpu;
    let embd = Arc::new(ct.tensor(reader, "token_embd.weight", dev)?);
    let embed = QEmbedding::new(embd.clone())?;
    let output = match ct.tensor(reader, "output.weight", dev) {
        Ok(t) => QMatMul::from_qtensor(t)?,
        Err(_) => QMatMul::from_arc(embd)?,
    };
    Ok((embed, output))
}

/// Feeds `x` (batch, seq) at `index_pos` through `layers` in pieces of at
/// most [`PREFILL_CHUNK`] tokens and returns the hidden state of the last
/// position (batch, dim), ready for the final norm and the output layer.
pub(super) fn feed_chunks(
    x: &Tensor,
    index_pos: usize,
    mut layers: impl FnMut(&Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    let (_b, seq_len) = x.dims2()?;
    if seq_len == 0 {
        candle_core::bail!("no tokens to feed");
    }
    if index_pos + seq_len > MAX_SEQ_LEN {
        candle_core::bail!(
            "sequence of {} tokens exceeds {MAX_SEQ_LEN}",
            index_pos + seq_len
        );
    }
    let mut start = 0;
    loop {
        let len = (seq_len - start).min(PREFILL_CHUNK);
        let h = layers(&x.narrow(1, start, len)?, index_pos + start)?;
        start += len;
        if start == seq_len {
            return h.i((.., len - 1, ..))?.contiguous();
        }
    }
}

impl Llama {
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: gguf_file::Content,
        reader: &mut R,
    ) -> Result<Self> {
        let dev = &Device::Cpu;
        let md = |s: &str| match ct.metadata.get(s) {
            None => candle_core::bail!("cannot find {s} in metadata"),
            Some(v) => Ok(v),
        };
        let experts = md("llama.expert_count")
            .and_then(|v| v.to_u32())
            .unwrap_or(0);
        if experts > 1 {
            candle_core::bail!("mixture-of-experts models are not supported by the local loader");
        }
        let n_head = md("llama.attention.head_count")?.to_u32()? as usize;
        let n_kv_head = md("llama.attention.head_count_kv")?.to_u32()? as usize;
        let blocks = md("llama.block_count")?.to_u32()? as usize;
        let dim = md("llama.embedding_length")?.to_u32()? as usize;
        let rope_dim = md("llama.rope.dimension_count")?.to_u32()? as usize;
        let eps = md("llama.attention.layer_norm_rms_epsilon")?.to_f32()?;
        let rope_base = md("llama.rope.freq_base")
            .and_then(|m| m.to_f32())
            .unwrap_or(10000f32);
        if n_head == 0
            || n_kv_head == 0
            || !n_head.is_multiple_of(n_kv_head)
            || !dim.is_multiple_of(n_head)
        {
            candle_core::bail!(
                "inconsistent head counts ({n_head} heads, {n_kv_head} kv heads, dim {dim})"
            );
        }
        let (embed, output) = embedding_and_output(&ct, reader)?;
        let norm = RmsNorm::new(ct.tensor(reader, "output_norm.weight", dev)?, eps)?;
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let mut t = |name: &str| ct.tensor(reader, &format!("blk.{i}.{name}.weight"), dev);
            let mut q = |name: &str| QMatMul::from_qtensor(t(name)?);
            let (wq, wk, wv, wo) = (q("attn_q")?, q("attn_k")?, q("attn_v")?, q("attn_output")?);
            let (w1, w2, w3) = (q("ffn_gate")?, q("ffn_down")?, q("ffn_up")?);
            layers.push(Layer {
                wq,
                wk,
                wv,
                wo,
                w1,
                w2,
                w3,
                attention_norm: RmsNorm::new(
                    ct.tensor(reader, &format!("blk.{i}.attn_norm.weight"), dev)?,
                    eps,
                )?,
                ffn_norm: RmsNorm::new(
                    ct.tensor(reader, &format!("blk.{i}.ffn_norm.weight"), dev)?,
                    eps,
                )?,
                n_head,
                n_kv_head,
                head_dim: dim / n_head,
                kv_cache: None,
            });
        }
        Ok(Self {
            embed,
            layers,
            norm,
            output,
            rope: rope_tables(rope_dim, rope_base)?,
            neg_inf: Tensor::new(f32::NEG_INFINITY, dev)?,
            masks: HashMap::new(),
        })
    }

    /// Feed `x` (batch, seq) token ids at position `index_pos` (0 restarts the
    /// KV cache); returns the logits of the last position. A long prompt is
    /// fed in chunks of [`PREFILL_CHUNK`] tokens, so the attention scores
    /// never hold more than chunk x context values (a 2,048-token prompt in
    /// one piece would need 150 MB for them alone).
    pub fn forward(&mut self, x: &Tensor, index_pos: usize) -> Result<Tensor> {
        let h = feed_chunks(x, index_pos, |c, p| self.layers_forward(c, p))?;
        self.output.forward(&self.norm.forward(&h)?)
    }

    fn layers_forward(&mut self, x: &Tensor, index_pos: usize) -> Result<Tensor> {
        let (_b, seq_len) = x.dims2()?;
        let mask = if seq_len == 1 {
            None
        } else {
            let key = (seq_len, index_pos + seq_len);
            if !self.masks.contains_key(&key) {
                if self.masks.len() >= 16 {
                    self.masks.clear();
                }
                self.masks.insert(key, causal_mask(seq_len, index_pos)?);
            }
            self.masks.get(&key).cloned()
        };
        let mut h = self.embed.forward(x)?;
        for layer in self.layers.iter_mut() {
            let a = layer.attention_norm.forward(&h)?;
            let a = layer.attention(&a, mask.as_ref(), index_pos, &self.rope, &self.neg_inf)?;
            let h2 = (a + &h)?;
            let m = layer.mlp(&layer.ffn_norm.forward(&h2)?)?;
            h = (m + h2)?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_square_and_with_prefix() {
        let m = causal_mask(3, 0).unwrap().to_vec2::<u8>().unwrap();
        assert_eq!(m, vec![vec![0, 1, 1], vec![0, 0, 1], vec![0, 0, 0]]);
        let m = causal_mask(2, 2).unwrap().to_vec2::<u8>().unwrap();
        assert_eq!(m, vec![vec![0, 0, 0, 1], vec![0, 0, 0, 0]]);
    }

    #[test]
    fn q8_0_rows_dequantize_like_candle() {
        let values: Vec<f32> = (0..4 * 64)
            .map(|i| ((i * 37) % 101) as f32 / 7.0 - 6.0)
            .collect();
        let t = Tensor::from_vec(values, (4, 64), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        let full = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let emb = QEmbedding::new(Arc::new(q)).unwrap();
        let ids = Tensor::new(&[[2u32, 0, 3]], &Device::Cpu).unwrap();
        let got = emb.forward(&ids).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(got[0][0], full[2]);
        assert_eq!(got[0][1], full[0]);
        assert_eq!(got[0][2], full[3]);
        let bad = Tensor::new(&[[4u32]], &Device::Cpu).unwrap();
        assert!(emb.forward(&bad).is_err());
    }
}
