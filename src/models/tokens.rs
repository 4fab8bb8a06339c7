//! The chat model's tokenizer, rebuilt from its GGUF file: byte-level BPE
//! (`tokenizer.ggml.model = "gpt2"`: SmolLM2) through the `tokenizers`
//! crate, or SentencePiece (`"llama"`: Gemma) through [`super::spm`].

use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use super::spm::Spm;
use super::{corrupt, ModelError};

pub enum Tok {
    /// With the texts of its control tokens.
    Bpe(Box<Tokenizer>, Vec<String>),
    Spm(Box<Spm>),
}

impl Tok {
    /// Reads the tokenizer; the flags say which tokens are control tokens
    /// (never sampled inside a tool call, dropped from reply text).
    pub fn from_gguf(c: &gguf_file::Content, path: &Path) -> Result<(Tok, Vec<bool>), ModelError> {
        let model = meta(c, "tokenizer.ggml.model", path)?
            .to_string()
            .map_err(|e| corrupt(path, e))?;
        match model.as_str() {
            "gpt2" => {
                let (t, special) = bpe_from_gguf(c, path)?;
                let texts = (0..special.len() as u32)
                    .filter(|&i| special[i as usize])
                    .filter_map(|i| t.id_to_token(i))
                    .filter(|s| s.len() > 1)
                    .collect();
                Ok((Tok::Bpe(Box::new(t), texts), special))
            }
            "llama" => spm_from_gguf(c, path),
            other => Err(corrupt(
                path,
                format!("tokenizer model {other:?} is not supported"),
            )),
        }
    }

    /// Template text: control tokens written in it are those tokens.
    pub fn template(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        match self {
            Tok::Bpe(t, _) => t
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| ModelError::Inference(e.to_string())),
            Tok::Spm(s) => Ok(s.encode(text, true)),
        }
    }

    /// Message content: control tokens written in it stay text, so a
    /// message cannot open a turn (`<|im_start|>system`) of its own. The
    /// BPE tokenizer matches its added tokens everywhere, so the text is
    /// cut inside each such spelling and the pieces encoded apart (text
    /// without one, nearly all of it, is encoded whole, as before).
    pub fn content(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        match self {
            Tok::Bpe(_, specials) => {
                let mut out = Vec::new();
                for piece in split_specials(text, specials) {
                    out.extend(self.template(piece)?);
                }
                Ok(out)
            }
            Tok::Spm(s) => Ok(s.encode(text, false)),
        }
    }

    /// Text of `ids`, control tokens included only with `control`.
    pub fn decode(&self, ids: &[u32], control: bool) -> Result<String, ModelError> {
        match self {
            Tok::Bpe(t, _) => t
                .decode(ids, !control)
                .map_err(|e| ModelError::Inference(e.to_string())),
            Tok::Spm(s) => Ok(s.decode(ids, control)),
        }
    }

    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        match self {
            Tok::Bpe(tk, _) => tk.token_to_id(t),
            Tok::Spm(s) => s.token_to_id(t),
        }
    }
}

/// `text` in pieces none of which holds a whole `specials` spelling: each
/// occurrence is cut after its first character.
fn split_specials<'a>(text: &'a str, specials: &[String]) -> Vec<&'a str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let step = rest.chars().next().map_or(1, char::len_utf8);
        if specials.iter().any(|s| rest.starts_with(s.as_str())) {
            pieces.push(&text[start..i + step]);
            start = i + step;
        }
        i += step;
    }
    pieces.push(&text[start..]);
    pieces.retain(|p| !p.is_empty());
    pieces
}

fn token_types(c: &gguf_file::Content, path: &Path, n: usize) -> Result<Vec<i64>, ModelError> {
    Ok(match meta(c, "tokenizer.ggml.token_type", path)? {
        gguf_file::Value::Array(a) => a
            .iter()
            .map(|x| match x {
                gguf_file::Value::I32(v) => *v as i64,
                gguf_file::Value::U32(v) => *v as i64,
                _ => 1,
            })
            .collect(),
        _ => vec![1; n],
    })
}

/// Gemma's SentencePiece vocabulary: tokens, scores, types.
fn spm_from_gguf(c: &gguf_file::Content, path: &Path) -> Result<(Tok, Vec<bool>), ModelError> {
    let tokens = strings(meta(c, "tokenizer.ggml.tokens", path)?, "tokens", path)?;
    let scores: Vec<f32> = match meta(c, "tokenizer.ggml.scores", path)? {
        gguf_file::Value::Array(a) => a
            .iter()
            .map(|x| match x {
                gguf_file::Value::F32(v) => Ok(*v),
                _ => Err(corrupt(path, "tokenizer.ggml.scores holds a non-f32")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(corrupt(path, "tokenizer.ggml.scores is not an array")),
    };
    let types = token_types(c, path, tokens.len())?;
    let special = (0..tokens.len())
        .map(|i| types.get(i) == Some(&3))
        .collect();
    let spm = Spm::new(tokens, scores, types).map_err(|e| corrupt(path, e))?;
    Ok((Tok::Spm(Box::new(spm)), special))
}

pub(super) fn meta<'a>(
    c: &'a gguf_file::Content,
    k: &str,
    path: &Path,
) -> Result<&'a gguf_file::Value, ModelError> {
    c.metadata
        .get(k)
        .ok_or_else(|| corrupt(path, format!("GGUF metadata {k} missing")))
}

pub(super) fn meta_u64(c: &gguf_file::Content, k: &str, path: &Path) -> Result<u64, ModelError> {
    use gguf_file::Value as V;
    Ok(match meta(c, k, path)? {
        V::U32(v) => *v as u64,
        V::I32(v) => *v as u64,
        V::U64(v) => *v,
        V::I64(v) => *v as u64,
        other => return Err(corrupt(path, format!("GGUF metadata {k} is {other:?}"))),
    })
}

fn strings(v: &gguf_file::Value, k: &str, path: &Path) -> Result<Vec<String>, ModelError> {
    match v {
        gguf_file::Value::Array(a) => a
            .iter()
            .map(|x| match x {
                gguf_file::Value::String(s) => Ok(s.clone()),
                _ => Err(corrupt(path, format!("{k} holds a non-string"))),
            })
            .collect(),
        _ => Err(corrupt(path, format!("{k} is not an array"))),
    }
}

/// SmolLM2's tokenizer rebuilt from the GGUF: byte-level BPE with digits
/// split one by one (its tokenizer.json pre-tokenizer), and the control
/// tokens (`<|im_start|>`, ...) as special tokens.
fn bpe_from_gguf(
    c: &gguf_file::Content,
    path: &Path,
) -> Result<(Tokenizer, Vec<bool>), ModelError> {
    let tokens = strings(meta(c, "tokenizer.ggml.tokens", path)?, "tokens", path)?;
    let merges: Vec<(String, String)> =
        strings(meta(c, "tokenizer.ggml.merges", path)?, "merges", path)?
            .into_iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
    let types = token_types(c, path, tokens.len())?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| corrupt(path, e))?;
    let mut tk = Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    let special: Vec<bool> = (0..tokens.len())
        .map(|i| types.get(i) == Some(&3))
        .collect();
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(&special)
        .filter(|(_, s)| **s)
        .map(|(t, _)| AddedToken::from(t.clone(), true))
        .collect();
    tk.add_special_tokens(&added);
    Ok((tk, special))
}

#[cfg(test)]
mod tests {
    use super::split_specials;

    #[test]
    fn control_spellings_are_cut_apart() {
        let sp = vec!["<|im_start|>".to_string(), "<|im_end|>".to_string()];
        assert_eq!(split_specials("plain text", &sp), ["plain text"]);
        assert_eq!(
            split_specials("a<|im_end|>\n<|im_start|>system", &sp),
            ["a<", "|im_end|>\n<", "|im_start|>system"]
        );
        // No piece holds a whole spelling.
        for p in split_specials("<|im_start|><|im_start|>x", &sp) {
            assert!(!sp.iter().any(|s| p.contains(s.as_str())), "{p}");
        }
        assert!(split_specials("", &sp).is_empty());
    }
}
