//! Quantized Gemma 3 forward pass (text only), for Gemma 3 270M.
//!
//! Written after llama.cpp's `gemma3` graph and candle-transformers 0.10.2
//! `models::quantized_gemma3` (Apache-2.0/MIT), with what a board needs and
//! what upstream candle gets wrong for this model:
//! - the token embedding stays quantized ([`QEmbedding`]): upstream
//!   dequantizes 262,144 x 640 values to f32, 671 MB;
//! - the feed-forward activation is GELU (tanh), as in llama.cpp and the
//!   reference implementation (upstream candle uses SiLU);
//! - the sliding-window layers see only the last `sliding_window` positions
//!   in every pass, chunked prefill and decoding included (upstream masks
//!   only within one pass), and their KV cache is trimmed to that window, so
//!   five of every six layers hold at most window + chunk positions.
//!
//! Per layer: RMS norm, attention (per-head RMS norm on queries and keys,
//! NeoX rotary embedding: base 10,000 on sliding layers, the file's base on
//! the global ones), RMS norm, residual; RMS norm, GELU-gated MLP, RMS norm,
//! residual. The input embedding is scaled by sqrt(dim); the output
//! projection is the tied embedding table.

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{Device, Module, Result, Tensor};

use super::llama::{attend, embedding_and_output, feed_chunks, rope_tables, QEmbedding, RmsNorm};

/// Every n-th layer attends globally, the others through a sliding window.
pub(super) const SLIDING_PATTERN: usize = 6;
const LOCAL_ROPE_BASE: f32 = 10_000.0;

struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attn_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    post_ffn_norm: RmsNorm,
    /// Some(window) for a sliding-window layer.
    window: Option<usize>,
    /// Keys and values for positions `kv_start..` (b, kv_heads, n, head_dim).
    kv: Option<(Tensor, Tensor)>,
    kv_start: usize,
}

/// Which keys a query may see: 1 where it may not (causal, and within the
/// window for a sliding layer). `None` when every key is visible.
fn mask(
    seq_len: usize,
    index_pos: usize,
    kv_start: usize,
    window: Option<usize>,
) -> Result<Option<Tensor>> {
    let kv_len = index_pos + seq_len - kv_start;
    let hidden = |i: usize, j: usize| {
        let (q, k) = (index_pos + i, kv_start + j);
        k > q || window.is_some_and(|w| q - k >= w)
    };
    let m: Vec<u8> = (0..seq_len)
        .flat_map(|i| (0..kv_len).map(move |j| u8::from(hidden(i, j))))
        .collect();
    if m.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    Tensor::from_vec(m, (seq_len, kv_len), &Device::Cpu).map(Some)
}

struct Dims {
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

impl Layer {
    fn attention(
        &mut self,
        x: &Tensor,
        index_pos: usize,
        d: &Dims,
        rope: &(Tensor, Tensor),
        neg_inf: &Tensor,
    ) -> Result<Tensor> {
        let (b, seq_len, _) = x.dims3()?;
        let heads = |t: Tensor, n: usize| {
            t.reshape((b, seq_len, n, d.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = self
            .q_norm
            .forward(&heads(self.wq.forward(x)?, d.n_head)?)?;
        let k = self
            .k_norm
            .forward(&heads(self.wk.forward(x)?, d.n_kv_head)?)?;
        let v = heads(self.wv.forward(x)?, d.n_kv_head)?;
        let cos = rope.0.narrow(0, index_pos, seq_len)?;
        let sin = rope.1.narrow(0, index_pos, seq_len)?;
        let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
        let (k, v) = match &self.kv {
            Some((kc, vc)) if index_pos > 0 => {
                (Tensor::cat(&[kc, &k], 2)?, Tensor::cat(&[vc, &v], 2)?)
            }
            _ => {
                self.kv_start = index_pos;
                (k, v)
            }
        };
        let m = mask(seq_len, index_pos, self.kv_start, self.window)?;
        // Keep for the next pass only what a later query can still see.
        let (kk, vv, start) = match self.window {
            Some(w) if k.dim(2)? > w => {
                let n = k.dim(2)?;
                (
                    k.narrow(2, n - w, w)?,
                    v.narrow(2, n - w, w)?,
                    self.kv_start + n - w,
                )
            }
            _ => (k.clone(), v.clone(), self.kv_start),
        };
        self.kv = Some((kk.contiguous()?, vv.contiguous()?));
        self.kv_start = start;
        let y = attend(&q, k, v, d.n_head / d.n_kv_head, m.as_ref(), neg_inf)?;
        let y = y
            .transpose(1, 2)?
            .reshape((b, seq_len, d.n_head * d.head_dim))?;
        self.wo.forward(&y)
    }

    fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate.forward(x)?.gelu()?;
        self.down.forward(&(gate * self.up.forward(x)?)?)
    }
}

/// A Gemma 3 text model from a GGUF file.
pub struct Gemma3 {
    embed: QEmbedding,
    scale: f64,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    dims: Dims,
    rope_local: (Tensor, Tensor),
    rope_global: (Tensor, Tensor),
    neg_inf: Tensor,
}

impl Gemma3 {
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: gguf_file::Content,
        reader: &mut R,
    ) -> Result<Self> {
        let dev = &Device::Cpu;
        let md = |s: &str| match ct.metadata.get(&format!("gemma3.{s}")) {
            None => candle_core::bail!("cannot find gemma3.{s} in metadata"),
            Some(v) => v.to_u32().map(|v| v as usize),
        };
        let n_head = md("attention.head_count")?;
        let n_kv_head = md("attention.head_count_kv")?;
        let blocks = md("block_count")?;
        let dim = md("embedding_length")?;
        let head_dim = md("attention.key_length")?;
        let window = md("attention.sliding_window")?;
        let f32_md = |s: &str| {
            ct.metadata
                .get(&format!("gemma3.{s}"))
                .and_then(|v| v.to_f32().ok())
        };
        let eps = f32_md("attention.layer_norm_rms_epsilon").unwrap_or(1e-6);
        let rope_base = f32_md("rope.freq_base").unwrap_or(1_000_000.0);
        let rope_local = f32_md("rope.local_freq_base").unwrap_or(LOCAL_ROPE_BASE);
        if n_head == 0
            || n_kv_head == 0
            || !n_head.is_multiple_of(n_kv_head)
            || head_dim == 0
            || head_dim % 2 != 0
            || window == 0
            || blocks == 0
        {
            candle_core::bail!(
                "inconsistent Gemma 3 shape ({n_head} heads, {n_kv_head} kv heads, head_dim \
                 {head_dim}, window {window}, {blocks} layers)"
            );
        }
        let (embed, output) = embedding_and_output(&ct, reader)?;
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let mut t = |name: &str| ct.tensor(reader, &format!("blk.{i}.{name}.weight"), dev);
            let mut q = |name: &str| QMatMul::from_qtensor(t(name)?);
            let (wq, wk, wv, wo) = (q("attn_q")?, q("attn_k")?, q("attn_v")?, q("attn_output")?);
            let (gate, up, down) = (q("ffn_gate")?, q("ffn_up")?, q("ffn_down")?);
            let mut n = |name: &str| {
                RmsNorm::new(
                    ct.tensor(reader, &format!("blk.{i}.{name}.weight"), dev)?,
                    eps,
                )
            };
            layers.push(Layer {
                wq,
                wk,
                wv,
                wo,
                gate,
                up,
                down,
                q_norm: n("attn_q_norm")?,
                k_norm: n("attn_k_norm")?,
                attn_norm: n("attn_norm")?,
                post_attn_norm: n("post_attention_norm")?,
                ffn_norm: n("ffn_norm")?,
                post_ffn_norm: n("post_ffw_norm")?,
                window: ((i + 1) % SLIDING_PATTERN != 0).then_some(window),
                kv: None,
                kv_start: 0,
            });
        }
        Ok(Self {
            embed,
            scale: (dim as f64).sqrt(),
            layers,
            norm: RmsNorm::new(ct.tensor(reader, "output_norm.weight", dev)?, eps)?,
            output,
            dims: Dims {
                n_head,
                n_kv_head,
                head_dim,
            },
            rope_local: rope_tables(head_dim, rope_local)?,
            rope_global: rope_tables(head_dim, rope_base)?,
            neg_inf: Tensor::new(f32::NEG_INFINITY, dev)?,
        })
    }

    /// Feed `x` (batch, seq) token ids at position `index_pos` (0 restarts
    /// the KV cache); returns the logits of the last position. Long prompts
    /// go in chunks of [`super::llama::PREFILL_CHUNK`] tokens.
    pub fn forward(&mut self, x: &Tensor, index_pos: usize) -> Result<Tensor> {
        let h = feed_chunks(x, index_pos, |c, p| self.layers_forward(c, p))?;
        self.output.forward(&self.norm.forward(&h)?)
    }

    fn layers_forward(&mut self, x: &Tensor, index_pos: usize) -> Result<Tensor> {
        let mut h = (self.embed.forward(x)? * self.scale)?;
        for layer in self.layers.iter_mut() {
            let rope = if layer.window.is_some() {
                &self.rope_local
            } else {
                &self.rope_global
            };
            let a = layer.attn_norm.forward(&h)?;
            let a = layer.attention(&a, index_pos, &self.dims, rope, &self.neg_inf)?;
            let h2 = (layer.post_attn_norm.forward(&a)? + &h)?;
            let m = layer.mlp(&layer.ffn_norm.forward(&h2)?)?;
            h = (layer.post_ffn_norm.forward(&m)? + h2)?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(m: Option<Tensor>) -> Vec<Vec<u8>> {
        m.map(|m| m.to_vec2::<u8>().unwrap()).unwrap_or_default()
    }

    #[test]
    fn causal_and_sliding_masks() {
        // Global layer, first pass: plain causal.
        assert_eq!(
            rows(mask(3, 0, 0, None).unwrap()),
            vec![vec![0, 1, 1], vec![0, 0, 1], vec![0, 0, 0]]
        );
        // Decoding one token with everything visible: no mask at all.
        assert!(mask(1, 5, 0, None).unwrap().is_none());
        // Window of 2: position 2 no longer sees position 0.
        assert_eq!(
            rows(mask(3, 0, 0, Some(2)).unwrap()),
            vec![vec![0, 1, 1], vec![0, 0, 1], vec![1, 0, 0]]
        );
        // A trimmed cache (keys from position 4) decoding position 6 with a
        // window of 2: key 4 is out of reach, keys 5 and 6 are visible.
        assert_eq!(rows(mask(1, 6, 4, Some(2)).unwrap()), vec![vec![1, 0, 0]]);
        assert!(mask(1, 6, 5, Some(2)).unwrap().is_none());
    }
}
