//! Hearth patch: runtime-dispatched AVX2/FMA kernel for Q8_0 x Q8_0.
//!
//! Upstream candle selects its quantized SIMD kernels with
//! `#[cfg(target_feature = "avx2")]`, i.e. at compile time. A binary built for
//! the x86-64 baseline (which is what a distributable package has to be) then
//! always runs the scalar path, about 6x slower on the Q8_0 chat model. This
//! module compiles the same kernel with `#[target_feature]` and is chosen at
//! run time when the CPU has AVX2 and FMA; CPUs without them (Atom/Celeron
//! class home servers) keep the scalar path. It is only compiled when the
//! build does not already enable AVX2 (then upstream's path is used as is).
use super::k_quants::{BlockQ8_0, QK8_0};
use std::arch::x86_64::*;

/// True when the running CPU (AVX2, FMA, F16C) can execute [`vec_dot_q8_0_q8_0`].
/// `is_x86_feature_detected!` caches its answer, so this is an atomic load.
#[inline]
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Same arithmetic as `avx::vec_dot_q8_0_q8_0`; the f16 scales are converted
/// with F16C inline (the `half` crate's runtime-detected conversion is an
/// out-of-line call per block) and two accumulators hide the FMA latency.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C (check [`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q8_0_q8_0(n: usize, xs: &[BlockQ8_0], ys: &[BlockQ8_0]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q8_0_q8_0: {n} is not divisible by {QK8_0}"
    );
    let mut acc = [_mm256_setzero_ps(); 2];
    for (i, (x, y)) in xs.iter().zip(ys.iter()).enumerate() {
        let d = _mm256_set1_ps(f16_to_f32(x.d.to_bits()) * f16_to_f32(y.d.to_bits()));
        let bx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
        // |x| * sign(y, x): unsigned x signed byte products, summed in pairs
        let ax = _mm256_sign_epi8(bx, bx);
        let sy = _mm256_sign_epi8(by, bx);
        let dot = _mm256_maddubs_epi16(ax, sy);
        let summed = _mm256_madd_epi16(_mm256_set1_epi16(1), dot);
        let q = _mm256_cvtepi32_ps(summed);
        acc[i & 1] = _mm256_fmadd_ps(d, q, acc[i & 1]);
    }
    let acc = _mm256_add_ps(acc[0], acc[1]);
    let res = _mm_add_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
    let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    let res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

#[target_feature(enable = "f16c")]
#[inline]
fn f16_to_f32(bits: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}
