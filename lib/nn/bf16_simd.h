// Internal to lib/nn: AVX512(-BF16) helpers shared by the hand-written bf16 kernels of the
// diffusion blocks (diffusers_attention.cpp, group_norm_bf16.cpp). Include only from .cpp files;
// callers check bf16_kernels_available() (nn/linear_bf16.h) before running anything here.
#pragma once

#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#define LLI_HAVE_BF16_SIMD 1
#define LLI_BF16_SIMD_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#else
#define LLI_HAVE_BF16_SIMD 0
#endif

#if LLI_HAVE_BF16_SIMD
namespace lli::nn::simd {

// bf16 x 16 -> fp32 x 16 (exact); fp32 x 16 -> bf16 x 16 (round to nearest even).
LLI_BF16_SIMD_TARGET inline __m512 load16(const std::uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
LLI_BF16_SIMD_TARGET inline void store16(std::uint16_t* p, __m512 v, __mmask16 m) {
  _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(v));
}
// The fp32 value of bf16(v): what a bf16 tensor op would store and the next op read back.
LLI_BF16_SIMD_TARGET inline __m512 round16(__m512 v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v)), 16));
}
inline __mmask16 tail_mask(std::int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

// e^x: Cody-Waite reduction, degree-7 polynomial (relative error ~1e-7); x clamped to [-87, 88].
LLI_BF16_SIMD_TARGET inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

// SiLU x / (1 + e^-x).
LLI_BF16_SIMD_TARGET inline __m512 silu16(__m512 x) {
  const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

}  // namespace lli::nn::simd
#endif  // LLI_HAVE_BF16_SIMD
