//! Splitting memory files into overlapping, line-aligned chunks.
//!
//! Sizes are in estimated tokens (4 characters per token, the usual figure
//! for English with BPE tokenizers); chunks break at line ends so a result
//! can name its line range, and consecutive chunks share about `overlap`
//! tokens of lines so a fact on a boundary is whole in one of them.

/// One chunk of a file: 1-based inclusive line range and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub from: usize,
    pub to: usize,
    pub text: String,
}

use crate::util::CHARS_PER_TOKEN;

fn line_hash(line: &str) -> u64 {
    line.trim_end()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Splits `text` into chunks of about `size` tokens with about `overlap`
/// tokens shared between neighbours. Blank-only text gives no chunks. A
/// single line longer than `size` is a chunk of its own (the embedder reads
/// its beginning, BM25 all of it).
pub fn chunk(text: &str, size: usize, overlap: usize) -> Vec<Chunk> {
    let max = size.max(1) * CHARS_PER_TOKEN;
    let keep = overlap.min(size / 2) * CHARS_PER_TOKEN;
    let lines: Vec<&str> = text.lines().collect();
    let len = |l: &str| l.chars().count() + 1;
    let mut out = Vec::new();
    let mut start = 0;
    while start < lines.len() {
        // Grow [start, end) up to the size (at least one line). Past half
        // the size, a line whose hash is 0 mod 4 also ends the chunk:
        // content-defined boundaries, so an edit near the top of a file
        // shifts only the chunks up to the next such line instead of every
        // chunk after it (which would all be re-embedded).
        let mut end = start;
        let mut chars = 0;
        while end < lines.len() && (end == start || chars + len(lines[end]) <= max) {
            chars += len(lines[end]);
            end += 1;
            if chars >= max / 2 && line_hash(lines[end - 1]).is_multiple_of(4) {
                break;
            }
        }
        let body = lines[start..end].join("\n");
        if !body.trim().is_empty() {
            out.push(Chunk {
                from: start + 1,
                to: end,
                text: body,
            });
        }
        if end >= lines.len() {
            break;
        }
        // next chunk starts `keep` characters of whole lines back, but always
        // moves forward
        let mut back = end;
        let mut shared = 0;
        while back > start + 1 && shared + len(lines[back - 1]) <= keep {
            shared += len(lines[back - 1]);
            back -= 1;
        }
        start = back;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate_tokens(s: &str) -> usize {
        crate::util::estimate_tokens(s.chars().count())
    }

    #[test]
    fn small_text_is_one_chunk_with_its_lines() {
        let c = chunk("# Notes\n\n- milk\n- eggs\n", 400, 80);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].from, c[0].to), (1, 4));
        assert!(c[0].text.contains("eggs"));
        assert!(chunk("\n  \n", 400, 80).is_empty());
    }

    #[test]
    fn long_text_overlaps_and_covers_every_line() {
        let text: String = (1..=200)
            .map(|i| format!("line {i} with a few words of text in it\n"))
            .collect();
        let c = chunk(&text, 100, 20);
        assert!(c.len() > 5, "{} chunks", c.len());
        assert_eq!(c[0].from, 1);
        assert_eq!(c.last().unwrap().to, 200);
        for w in c.windows(2) {
            assert!(w[1].from <= w[0].to, "neighbours overlap: {w:?}");
            assert!(w[1].from > w[0].from, "progress");
        }
        for ch in &c {
            assert!(
                estimate_tokens(&ch.text) <= 101,
                "{}",
                estimate_tokens(&ch.text)
            );
        }
    }

    #[test]
    fn an_insertion_at_the_top_changes_few_chunks() {
        let text: String = (1..=400)
            .map(|i| format!("- item {i} is kept in box {}\n", i % 17))
            .collect();
        let a = chunk(&text, 100, 20);
        let b = chunk(&format!("# Title\n\nintro line\n{text}"), 100, 20);
        let same = b
            .iter()
            .filter(|c| a.iter().any(|x| x.text == c.text))
            .count();
        assert!(
            b.len() - same <= 2,
            "{} of {} chunks changed",
            b.len() - same,
            b.len()
        );
    }

    #[test]
    fn an_overlong_line_is_its_own_chunk() {
        let long = "x".repeat(5000);
        let c = chunk(&format!("a\n{long}\nb"), 100, 20);
        assert!(c.iter().any(|ch| ch.text == long));
        assert_eq!(c.last().unwrap().to, 3);
    }
}
