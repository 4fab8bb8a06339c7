//! SentencePiece (BPE-style, score-merged) tokenizer rebuilt from a GGUF
//! file's vocabulary, as llama.cpp's `llm_tokenizer_spm` does it: Gemma's
//! GGUF carries tokens, scores and token types but no merges, so the
//! `tokenizers` crate's BPE cannot be built from it.
//!
//! Encoding: control tokens (`<start_of_turn>`, type 3; only where the
//! caller allows them) and user-defined tokens (type 4: runs of newlines,
//! spaces and tabs, a few HTML tags) are split out of the raw text first,
//! longest first; the rest has its spaces replaced by `▁` and is merged
//! from single characters, always the adjacent pair whose merged piece
//! scores highest (leftmost on a tie); a character the vocabulary lacks
//! falls back to its UTF-8 bytes (`<0xE2>` ...).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// GGUF `tokenizer.ggml.token_type` values.
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// The space marker SentencePiece puts in place of ' '.
const SPACE: char = '\u{2581}';

pub struct Spm {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i64>,
    ids: HashMap<String, u32>,
    /// Token id of each byte's fallback piece `<0xXX>`.
    bytes: [Option<u32>; 256],
    /// User-defined and control tokens by first character, longest first
    /// (apart: message text is only ever matched against the first).
    user_defined: HashMap<char, Vec<u32>>,
    control: HashMap<char, Vec<u32>>,
    unk: Option<u32>,
}

#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Highest score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// A piece of the text being merged: a byte range, linked to its
/// neighbours (`usize::MAX` = none).
#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

impl Spm {
    /// `types` may be shorter than `tokens` (missing = normal).
    pub fn new(tokens: Vec<String>, scores: Vec<f32>, types: Vec<i64>) -> Result<Spm, String> {
        if tokens.is_empty() || tokens.len() > u32::MAX as usize {
            return Err(format!("vocabulary of {} tokens", tokens.len()));
        }
        if scores.len() != tokens.len() {
            return Err(format!(
                "{} scores for {} tokens",
                scores.len(),
                tokens.len()
            ));
        }
        let mut types = types;
        types.resize(tokens.len(), 1);
        let mut ids = HashMap::with_capacity(tokens.len());
        let mut bytes = [None; 256];
        let mut user_defined: HashMap<char, Vec<u32>> = HashMap::new();
        let mut control: HashMap<char, Vec<u32>> = HashMap::new();
        for (i, t) in tokens.iter().enumerate() {
            let id = i as u32;
            ids.entry(t.clone()).or_insert(id);
            match types[i] {
                TYPE_BYTE => {
                    let b = t
                        .strip_prefix("<0x")
                        .and_then(|h| h.strip_suffix('>'))
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    if let Some(b) = b {
                        bytes[b as usize] = Some(id);
                    }
                }
                TYPE_CONTROL | TYPE_USER_DEFINED => {
                    let map = if types[i] == TYPE_CONTROL {
                        &mut control
                    } else {
                        &mut user_defined
                    };
                    if let Some(c) = t.chars().next() {
                        map.entry(c).or_default().push(id);
                    }
                }
                _ => {}
            }
        }
        for list in user_defined.values_mut().chain(control.values_mut()) {
            list.sort_by_key(|&id| std::cmp::Reverse(tokens[id as usize].len()));
        }
        let unk = ids.get("<unk>").copied();
        Ok(Spm {
            tokens,
            scores,
            types,
            ids,
            bytes,
            user_defined,
            control,
            unk,
        })
    }

    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.ids.get(t).copied()
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&TYPE_CONTROL)
    }

    /// The special token starting at `text[at..]`, if any (control tokens
    /// only when `control`).
    fn special_at(&self, text: &str, at: usize, control: bool) -> Option<u32> {
        let rest = &text[at..];
        let c = rest.chars().next()?;
        let find = |map: &HashMap<char, Vec<u32>>| {
            map.get(&c)?
                .iter()
                .copied()
                .find(|&id| rest.starts_with(self.tokens[id as usize].as_str()))
        };
        // The longer of the two matches (`<start_of_turn>` over `<s>`).
        let longest = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (Some(a), Some(b)) if self.tokens[b as usize].len() > self.tokens[a as usize].len() => {
                Some(b)
            }
            (a, b) => a.or(b),
        };
        let user = find(&self.user_defined);
        if control {
            longest(user, find(&self.control))
        } else {
            user
        }
    }

    /// Token ids of `text`; with `control`, control tokens written in the
    /// text (`<bos>`, `<start_of_turn>`) become those tokens, otherwise
    /// they are ordinary text.
    pub fn encode(&self, text: &str, control: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut plain = 0;
        let mut i = 0;
        while i < text.len() {
            if let Some(id) = self.special_at(text, i, control) {
                self.encode_plain(&text[plain..i], &mut out);
                out.push(id);
                i += self.tokens[id as usize].len();
                plain = i;
            } else {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
        self.encode_plain(&text[plain..], &mut out);
        out
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let text: String = text
            .chars()
            .map(|c| if c == ' ' { SPACE } else { c })
            .collect();
        let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let n = syms.len();
            syms.push(Sym {
                start,
                len: c.len_utf8(),
                prev: n.wrapping_sub(1),
                next: n + 1,
            });
        }
        if let Some(last) = syms.last_mut() {
            last.next = usize::MAX;
        }
        let mut queue = BinaryHeap::new();
        for i in 1..syms.len() {
            self.push_bigram(&text, &syms, i - 1, i, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (syms[b.left], syms[b.right]);
            // Stale: one side was merged away since this pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            syms[b.left].len += r.len;
            syms[b.left].next = r.next;
            syms[b.right].len = 0;
            if r.next != usize::MAX {
                syms[r.next].prev = b.left;
            }
            if l.prev != usize::MAX {
                self.push_bigram(&text, &syms, l.prev, b.left, &mut queue);
            }
            if r.next != usize::MAX {
                self.push_bigram(&text, &syms, b.left, r.next, &mut queue);
            }
        }
        let mut i = 0;
        while i != usize::MAX && i < syms.len() {
            let s = syms[i];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece).filter(|&&id| !self.is_control(id)) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        if let Some(id) = self.bytes[b as usize].or(self.unk) {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }

    fn push_bigram(
        &self,
        text: &str,
        syms: &[Sym],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        let (l, r) = (syms[left], syms[right]);
        let piece = &text[l.start..r.start + r.len];
        // Control tokens never come out of merging plain text.
        if let Some(&id) = self.ids.get(piece).filter(|&&id| !self.is_control(id)) {
            queue.push(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                size: piece.len(),
            });
        }
    }

    /// The bytes token `id` stands for (`▁` as a space, `<0xXX>` as its
    /// byte); control tokens give their text only with `control`.
    fn piece_bytes(&self, id: u32, control: bool, out: &mut Vec<u8>) {
        let Some(t) = self.tokens.get(id as usize) else {
            return;
        };
        match self.types[id as usize] {
            TYPE_CONTROL if !control => {}
            TYPE_BYTE => match self.bytes.iter().position(|b| *b == Some(id)) {
                Some(b) => out.push(b as u8),
                None => out.extend_from_slice(t.as_bytes()),
            },
            _ => {
                for c in t.chars() {
                    let c = if c == SPACE { ' ' } else { c };
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
            }
        }
    }

    /// Text of `ids`; bytes that do not (yet) form UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32], control: bool) -> String {
        let mut out = Vec::new();
        for &id in ids {
            self.piece_bytes(id, control, &mut out);
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small vocabulary shaped like Gemma's: control tokens, a newline
    /// run, byte fallbacks, pieces whose score says which merge wins.
    fn vocab() -> Spm {
        let mut toks: Vec<(&str, f32, i64)> = vec![
            ("<pad>", 0.0, 3),
            ("<eos>", 0.0, 3),
            ("<bos>", 0.0, 3),
            ("<unk>", 0.0, 3),
            ("<start_of_turn>", 0.0, 3),
            ("\n", 0.0, 4),
            ("\n\n", 0.0, 4),
        ];
        let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        for b in &bytes {
            toks.push((b.as_str(), 0.0, 6));
        }
        toks.extend([
            ("a", -1.0, 1),
            ("b", -1.0, 1),
            ("c", -1.0, 1),
            ("\u{2581}", -1.0, 1),
            ("ab", -5.0, 1),
            ("bc", -2.0, 1),
            ("abc", -3.0, 1),
            ("\u{2581}a", -4.0, 1),
            ("é", -1.0, 1),
        ]);
        Spm::new(
            toks.iter().map(|t| t.0.to_string()).collect(),
            toks.iter().map(|t| t.1).collect(),
            toks.iter().map(|t| t.2).collect(),
        )
        .unwrap()
    }

    fn pieces(s: &Spm, text: &str, control: bool) -> Vec<String> {
        s.encode(text, control)
            .into_iter()
            .map(|id| s.tokens[id as usize].clone())
            .collect()
    }

    #[test]
    fn merges_by_score_not_left_to_right() {
        let s = vocab();
        // "bc" (-2) beats "ab" (-5); then "a"+"bc" = "abc" (-3).
        assert_eq!(pieces(&s, "abc", false), ["abc"]);
        // "ab" alone merges when nothing better is there.
        assert_eq!(pieces(&s, "ab", false), ["ab"]);
        // "▁a" (-4) loses to "bc" then "abc", which took its "a".
        assert_eq!(pieces(&s, "a abc", false), ["a", "\u{2581}", "abc"]);
        assert_eq!(pieces(&s, "a a", false), ["a", "\u{2581}a"]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let s = vocab();
        assert_eq!(pieces(&s, "€", false), ["<0xE2>", "<0x82>", "<0xAC>"]);
        assert_eq!(pieces(&s, "é", false), ["é"]);
        assert_eq!(s.decode(&s.encode("a €é", false), false), "a €é");
        // A lone byte of a longer character is not text yet.
        assert!(s
            .decode(&s.encode("€", false)[..1], false)
            .contains('\u{FFFD}'));
    }

    #[test]
    fn control_tokens_only_where_allowed_user_defined_always() {
        let s = vocab();
        assert_eq!(
            pieces(&s, "<bos><start_of_turn>a\n\n\nb", true),
            ["<bos>", "<start_of_turn>", "a", "\n\n", "\n", "b"]
        );
        // In user content a control token is just characters.
        let plain = s.encode("<bos>", false);
        assert!(!plain.contains(&2), "{plain:?}");
        assert_eq!(s.decode(&plain, false), "<bos>");
        // Nor can merging plain text produce one.
        let s2 = Spm::new(
            vec!["a".into(), "b".into(), "ab".into()],
            vec![0.0, 0.0, 5.0],
            vec![1, 1, 3],
        )
        .unwrap();
        assert_eq!(s2.encode("ab", false), vec![0, 1]);
        assert_eq!(s2.encode("ab", true), vec![2]);
        // Decoding drops control tokens unless asked.
        let ids = s.encode("<bos>ab", true);
        assert_eq!(s.decode(&ids, false), "ab");
        assert_eq!(s.decode(&ids, true), "<bos>ab");
    }

    #[test]
    fn hostile_vocabularies_are_refused_or_harmless() {
        assert!(Spm::new(vec![], vec![], vec![]).is_err());
        assert!(Spm::new(vec!["a".into()], vec![], vec![]).is_err());
        // No byte tokens and no <unk>: unknown text is dropped, not a panic.
        let s = Spm::new(vec!["a".into()], vec![0.0], vec![]).unwrap();
        assert_eq!(s.encode("xa", false), vec![0]);
        assert_eq!(s.decode(&[7, 0], false), "a");
    }
}
