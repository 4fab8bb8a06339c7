//! Hearth's small hot loops.
//!
//! They live in their own crate because Hearth is built with
//! `opt-level = "z"` (size), which has no loop vectorizer; this crate gets
//! `opt-level = 3` in the release profile, so the plain loops below compile
//! to SIMD (SSE2/AVX2 on x86-64, NEON on aarch64) without `unsafe`.

#![forbid(unsafe_code)]

/// Dot product of two int8 vectors (any equal length).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// Dot products of `q` with each `q.len()`-long row of `rows`, into `out`
/// (cleared first). A trailing partial row is ignored.
pub fn dots_i8(rows: &[i8], q: &[i8], out: &mut Vec<i32>) {
    out.clear();
    if q.is_empty() {
        return;
    }
    out.extend(rows.chunks_exact(q.len()).map(|r| dot_i8(r, q)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_match_a_plain_loop() {
        let q: Vec<i8> = (0..384).map(|i| ((i * 37) % 255 - 127) as i8).collect();
        let rows: Vec<i8> = (0..384 * 5).map(|i| ((i * 11) % 255 - 127) as i8).collect();
        let mut out = Vec::new();
        dots_i8(&rows, &q, &mut out);
        assert_eq!(out.len(), 5);
        for (r, got) in rows.chunks(384).zip(&out) {
            let want: i64 = r.iter().zip(&q).map(|(&a, &b)| a as i64 * b as i64).sum();
            assert_eq!(*got as i64, want);
        }
        // extremes do not overflow an i32 at this length
        assert_eq!(dot_i8(&[-128; 384], &[-128; 384]), 384 * 16384);
    }
}
