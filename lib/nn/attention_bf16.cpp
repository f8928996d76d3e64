// Ref: transformers LlamaAttention / CLIPAttention eager paths (v4.45); see attention_bf16.h.
#include "nn/attention_bf16.h"

#include <ATen/record_function.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "lli/error.h"
#include "nn/linear_bf16.h"

#include "nn/bf16_simd.h"

#define LLI_HAVE_BF16_KERNEL LLI_HAVE_BF16_SIMD

namespace lli::nn {

namespace {

inline float round_bf16(float f) {  // fp32 -> bf16 -> fp32, round to nearest even
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return f;
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline std::uint16_t bf16_bits(float f) {  // f already representable in bf16
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return static_cast<std::uint16_t>(u >> 16);
}

inline float bf16_value(std::uint16_t b) {
  std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

#if LLI_HAVE_BF16_KERNEL

#define LLI_BF16_TARGET LLI_BF16_SIMD_TARGET
using simd::exp16;
using simd::round16;

LLI_BF16_TARGET inline float hsum(__m512 v) {
  alignas(64) float l[16];
  _mm512_store_ps(l, v);
  return ((l[0] + l[8]) + (l[4] + l[12])) + ((l[2] + l[10]) + (l[6] + l[14])) +
         (((l[1] + l[9]) + (l[5] + l[13])) + ((l[3] + l[11]) + (l[7] + l[15])));
}

// hsum of 16 vectors at once: lane t of the result = hsum(a[t]), with hsum's tree (lane i + lane
// i+8, then + 4, + 2, + 1), done across the vectors with 128-bit and in-lane shuffles.
LLI_BF16_TARGET inline __m512 hsum16(const __m512 (&a)[16]) {
  __m512 z[8], w[4], q[2];
  for (int p = 0; p < 8; ++p)  // lanes 0-7: a[2p]'s l_i + l_{i+8}; lanes 8-15: a[2p+1]'s
    z[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0x44),
                         _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0xEE));
  for (int p = 0; p < 4; ++p)  // 128-bit block b: vector 4p + b's four (+ 4) sums
    w[p] = _mm512_add_ps(_mm512_shuffle_f32x4(z[2 * p], z[2 * p + 1], 0x88),
                         _mm512_shuffle_f32x4(z[2 * p], z[2 * p + 1], 0xDD));
  for (int p = 0; p < 2; ++p)  // block b: vectors 8p + b and 8p + 4 + b, two (+ 2) sums each
    q[p] = _mm512_add_ps(_mm512_shuffle_ps(w[2 * p], w[2 * p + 1], 0x44), _mm512_shuffle_ps(w[2 * p], w[2 * p + 1], 0xEE));
  // block b: the sums of vectors b, 4 + b, 8 + b, 12 + b
  const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(q[0], q[1], 0x88), _mm512_shuffle_ps(q[0], q[1], 0xDD));
  const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  return _mm512_permutexvar_ps(order, s);
}

struct Strides {
  std::int64_t b, h, l;  // elements; the last dim has stride 1
};

constexpr std::int64_t kPrefetchRows = 16;

// One (batch, head, query row): scores over the visible keys, softmax, weighted sum of values.
// `qrow` is already scaled (multiply_query) and rounded to bf16. scores: scratch of >= n floats.
LLI_BF16_TARGET void attend_row(const std::uint16_t* qrow, const std::uint16_t* kh, std::int64_t k_l,
                                const std::uint16_t* vh, std::int64_t v_l, std::int64_t n, std::int64_t D,
                                bool divide, float divisor, float* scores, std::uint16_t* out) {
  // Query in registers as 32-element chunks (D <= 256: 8 chunks).
  const std::int64_t nq = (D + 31) / 32;
  __m512i qv[8];
  __mmask32 qm[8];
  for (std::int64_t c = 0; c < nq; ++c) {
    const std::int64_t left = D - 32 * c;
    qm[c] = left >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << left) - 1);
    qv[c] = _mm512_maskz_loadu_epi16(qm[c], qrow + 32 * c);
  }
  float mx = -INFINITY;
  // Software prefetch kPrefetchRows key/value rows ahead: a decode step reads every layer's cache
  // from memory (it does not stay in cache across the layers), and the hardware prefetchers stop
  // at each 4 KiB page (measured: 3.8x slower than the same call with the cache warm).
  const std::int64_t row_bytes = 2 * D;
  auto prefetch_row = [&](const std::uint16_t* r) {
    const char* c = reinterpret_cast<const char*>(r);
    for (std::int64_t b = 0; b < row_bytes; b += 64) _mm_prefetch(c + b, _MM_HINT_T0);
  };
  auto key_acc = [&](std::int64_t j) LLI_BF16_TARGET {
    const std::uint16_t* kr = kh + j * k_l;
    prefetch_row(kr + kPrefetchRows * k_l);
    __m512 acc = _mm512_setzero_ps();
    for (std::int64_t c = 0; c < nq; ++c)
      acc = _mm512_dpbf16_ps(acc, (__m512bh)qv[c], (__m512bh)_mm512_maskz_loadu_epi16(qm[c], kr + 32 * c));
    return acc;
  };
  // 16 keys at a time: their accumulators summed side by side with the same pairwise tree as hsum
  // (hsum16), so the scores are the same numbers, and rounded and divided 16 lanes at a time.
  std::int64_t j = 0;
  __m512 mx16 = _mm512_set1_ps(-INFINITY);
  for (; j + 16 <= n; j += 16) {
    __m512 a[16];
    for (int t = 0; t < 16; ++t) a[t] = key_acc(j + t);
    __m512 sv = round16(hsum16(a));                                        // matmul output in bf16
    if (divide) sv = round16(_mm512_div_ps(sv, _mm512_set1_ps(divisor)));  // bf16 division
    _mm512_storeu_ps(scores + j, sv);
    mx16 = _mm512_max_ps(mx16, sv);
  }
  if (j > 0) mx = _mm512_reduce_max_ps(mx16);
  for (; j < n; ++j) {
    float s = round_bf16(hsum(key_acc(j)));      // matmul output in bf16
    if (divide) s = round_bf16(s / divisor);     // bf16 division
    scores[j] = s;
    mx = std::max(mx, s);
  }
  // Softmax in fp32 (all scores -inf: torch gives NaN; keep that).
  float sum = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    const float e = std::exp(scores[j] - mx);
    scores[j] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  // Weighted sum of values, fp32 accumulators (D <= 256: 16 registers).
  const std::int64_t nv = (D + 15) / 16;
  __m512 acc[16];
  __mmask16 vm[16];
  for (std::int64_t c = 0; c < nv; ++c) {
    acc[c] = _mm512_setzero_ps();
    const std::int64_t left = D - 16 * c;
    vm[c] = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
  }
  for (std::int64_t j = 0; j < kPrefetchRows && j < n; ++j) prefetch_row(vh + j * v_l);
  for (std::int64_t j = 0; j < n; ++j) {
    const __m512 p = _mm512_set1_ps(round_bf16(scores[j] * inv));  // probabilities in bf16
    const std::uint16_t* vr = vh + j * v_l;
    prefetch_row(vr + kPrefetchRows * v_l);
    for (std::int64_t c = 0; c < nv; ++c) acc[c] = _mm512_fmadd_ps(p, simd::load16(vr + 16 * c, vm[c]), acc[c]);
  }
  alignas(64) float o[256];
  for (std::int64_t c = 0; c < nv; ++c) _mm512_store_ps(o + 16 * c, acc[c]);
  for (std::int64_t d = 0; d < D; ++d) out[d] = bf16_bits(round_bf16(o[d]));
}

// ---- many query rows: keys and values repacked once per head into dot-product pairs ----------

// From this many query rows on, a head's keys and values are repacked so that scores and the
// weighted sum come out 16 lanes at a time (no horizontal sums).
constexpr std::int64_t kPackedMinQueries = 16;

// Keys [Lk, D] (row stride k_l) -> [ceil(Lk/16)][P = ceil(D/2)][16 keys][2], zero-padded.
void pack_keys(const std::uint16_t* kh, std::int64_t k_l, std::int64_t Lk, std::int64_t D, std::uint16_t* out) {
  const std::int64_t P = (D + 1) / 2, nb = (Lk + 15) / 16;
  for (std::int64_t jb = 0; jb < nb; ++jb)
    for (std::int64_t l = 0; l < 16; ++l) {
      const std::int64_t j = 16 * jb + l;
      std::uint16_t* o = out + jb * P * 32 + 2 * l;
      if (j >= Lk) {
        for (std::int64_t p = 0; p < P; ++p) o[p * 32] = o[p * 32 + 1] = 0;
        continue;
      }
      const std::uint16_t* kr = kh + j * k_l;
      for (std::int64_t p = 0; p < P; ++p) {
        o[p * 32] = kr[2 * p];
        o[p * 32 + 1] = 2 * p + 1 < D ? kr[2 * p + 1] : 0;
      }
    }
}

// Values [Lk, D] (row stride v_l) -> [ceil(Lk/2)][D16 = D rounded up to 16][2 keys], zero-padded.
void pack_values(const std::uint16_t* vh, std::int64_t v_l, std::int64_t Lk, std::int64_t D, std::uint16_t* out) {
  const std::int64_t D16 = (D + 15) / 16 * 16, nt = (Lk + 1) / 2;
  for (std::int64_t t = 0; t < nt; ++t) {
    std::uint16_t* o = out + t * D16 * 2;
    for (int e = 0; e < 2; ++e) {
      const std::int64_t j = 2 * t + e;
      if (j >= Lk) {
        for (std::int64_t d = 0; d < D16; ++d) o[2 * d + e] = 0;
        continue;
      }
      const std::uint16_t* vr = vh + j * v_l;
      for (std::int64_t d = 0; d < D; ++d) o[2 * d + e] = vr[d];
      for (std::int64_t d = D; d < D16; ++d) o[2 * d + e] = 0;
    }
  }
}

// Softmax in fp32 of nb blocks of 16 scores whose lane-wise maximum is vmax; probabilities
// rounded to bf16 into probs (masked lanes: exp(-inf) = 0), then two zero pads.
LLI_BF16_TARGET inline void softmax_to_bf16(float* scores, std::int64_t nb, __m512 vmax, std::uint16_t* probs) {
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 vsum = _mm512_setzero_ps();
  for (std::int64_t b = 0; b < nb; ++b) {
    const __m512 sc = _mm512_loadu_ps(scores + 16 * b);
    const __mmask16 live = _mm512_cmp_ps_mask(sc, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    const __m512 e = _mm512_maskz_mov_ps(live, exp16(_mm512_sub_ps(sc, mx)));
    _mm512_storeu_ps(scores + 16 * b, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
  for (std::int64_t b = 0; b < nb; ++b)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(probs + 16 * b),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(scores + 16 * b), inv)));
  probs[16 * nb] = probs[16 * nb + 1] = 0;
}

// One query row against packed keys/values, the first n keys visible. scores: >= ceil(n/16)*16
// floats; probs: >= ceil(n/16)*16 + 2 bf16.
LLI_BF16_TARGET void attend_row_packed(const std::uint16_t* qrow, const std::uint16_t* kpk, const std::uint16_t* vpk,
                                       std::int64_t n, std::int64_t D, bool divide, float divisor, float* scores,
                                       std::uint16_t* probs, std::uint16_t* out) {
  const std::int64_t P = (D + 1) / 2, D16 = (D + 15) / 16 * 16, nb = (n + 15) / 16;
  std::uint32_t qw[128];  // query pairs (D <= 256)
  for (std::int64_t p = 0; p < P; ++p)
    qw[p] = static_cast<std::uint32_t>(qrow[2 * p]) |
            (2 * p + 1 < D ? static_cast<std::uint32_t>(qrow[2 * p + 1]) << 16 : 0u);
  const __m512 vdiv = _mm512_set1_ps(divisor);
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  auto finish = [&](__m512 acc, std::int64_t blk) LLI_BF16_TARGET {
    __m512 sc = round16(acc);                        // matmul output in bf16
    if (divide) sc = round16(_mm512_div_ps(sc, vdiv));  // bf16 division
    const std::int64_t left = n - 16 * blk;
    if (left < 16) sc = _mm512_mask_blend_ps(static_cast<__mmask16>((1u << left) - 1), _mm512_set1_ps(-INFINITY), sc);
    _mm512_storeu_ps(scores + 16 * blk, sc);
    vmax = _mm512_max_ps(vmax, sc);
  };
  std::int64_t jb = 0;
  for (; jb + 4 <= nb; jb += 4) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const std::uint16_t* k0 = kpk + jb * P * 32;
    for (std::int64_t p = 0; p < P; ++p) {
      const __m512bh qb = (__m512bh)_mm512_set1_epi32(static_cast<int>(qw[p]));
      a0 = _mm512_dpbf16_ps(a0, qb, (__m512bh)_mm512_loadu_si512(k0 + p * 32));
      a1 = _mm512_dpbf16_ps(a1, qb, (__m512bh)_mm512_loadu_si512(k0 + (P + p) * 32));
      a2 = _mm512_dpbf16_ps(a2, qb, (__m512bh)_mm512_loadu_si512(k0 + (2 * P + p) * 32));
      a3 = _mm512_dpbf16_ps(a3, qb, (__m512bh)_mm512_loadu_si512(k0 + (3 * P + p) * 32));
    }
    finish(a0, jb);
    finish(a1, jb + 1);
    finish(a2, jb + 2);
    finish(a3, jb + 3);
  }
  for (; jb < nb; ++jb) {
    __m512 a0 = _mm512_setzero_ps();
    const std::uint16_t* k0 = kpk + jb * P * 32;
    for (std::int64_t p = 0; p < P; ++p)
      a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_set1_epi32(static_cast<int>(qw[p])),
                            (__m512bh)_mm512_loadu_si512(k0 + p * 32));
    finish(a0, jb);
  }
  softmax_to_bf16(scores, nb, vmax, probs);
  // Weighted sum of values: two keys per dot-product step, fp32 accumulators.
  const std::int64_t nc = D16 / 16, nt = (n + 1) / 2;
  __m512 acc[16];
  for (std::int64_t c = 0; c < nc; ++c) acc[c] = _mm512_setzero_ps();
  for (std::int64_t t = 0; t < nt; ++t) {
    std::uint32_t pw;
    std::memcpy(&pw, probs + 2 * t, sizeof pw);
    const __m512bh pb = (__m512bh)_mm512_set1_epi32(static_cast<int>(pw));
    const std::uint16_t* vr = vpk + t * D16 * 2;
    for (std::int64_t c = 0; c < nc; ++c)
      acc[c] = _mm512_dpbf16_ps(acc[c], pb, (__m512bh)_mm512_loadu_si512(vr + 32 * c));
  }
  for (std::int64_t c = 0; c < nc; ++c) {
    const std::int64_t left = D - 16 * c;
    const __mmask16 m = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
    _mm256_mask_storeu_epi16(out + 16 * c, m, (__m256i)_mm512_cvtneps_pbh(acc[c]));
  }
}

// ---- many query rows, all keys visible: kRowBlock rows share each packed key / value load ----
// Each row's arithmetic is attend_row_packed's, in the same order (bit-identical results); the
// rows of a block reuse every key and value vector loaded, where one row at a time re-reads the
// head's packed keys and values from L2 for every query (bandwidth-bound for small head dims).
constexpr int kRowBlock = 4;

// Query row -> bf16 pairs as one 32-bit word each (D <= 256: 128 words).
inline void query_pairs(const std::uint16_t* qrow, std::int64_t D, std::uint32_t* qw) {
  const std::int64_t P = (D + 1) / 2;
  for (std::int64_t p = 0; p < P; ++p)
    qw[p] = static_cast<std::uint32_t>(qrow[2 * p]) |
            (2 * p + 1 < D ? static_cast<std::uint32_t>(qrow[2 * p + 1]) << 16 : 0u);
}

// Scores of kRowBlock rows (qw: kRowBlock x 128 pair words) against all n keys; row r's scores
// go to scores + r * ld and their lane-wise maximum to vmax[r].
LLI_BF16_TARGET void scores_block(const std::uint32_t* qw, const std::uint16_t* kpk, std::int64_t n, std::int64_t D,
                                  bool divide, float divisor, float* scores, std::int64_t ld, __m512* vmax) {
  constexpr int R = kRowBlock;
  const std::int64_t P = (D + 1) / 2, nb = (n + 15) / 16;
  const __m512 vdiv = _mm512_set1_ps(divisor);
  __m512 mx[R];
  for (int r = 0; r < R; ++r) mx[r] = _mm512_set1_ps(-INFINITY);
  auto finish = [&](__m512 acc, int r, std::int64_t blk) LLI_BF16_TARGET {
    __m512 sc = round16(acc);
    if (divide) sc = round16(_mm512_div_ps(sc, vdiv));
    const std::int64_t left = n - 16 * blk;
    if (left < 16) sc = _mm512_mask_blend_ps(static_cast<__mmask16>((1u << left) - 1), _mm512_set1_ps(-INFINITY), sc);
    _mm512_storeu_ps(scores + r * ld + 16 * blk, sc);
    mx[r] = _mm512_max_ps(mx[r], sc);
  };
  std::int64_t jb = 0;
  for (; jb + 4 <= nb; jb += 4) {
    __m512 a[R][4];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < 4; ++c) a[r][c] = _mm512_setzero_ps();
    const std::uint16_t* k0 = kpk + jb * P * 32;
    for (std::int64_t p = 0; p < P; ++p) {
      const __m512bh k0v = (__m512bh)_mm512_loadu_si512(k0 + p * 32);
      const __m512bh k1v = (__m512bh)_mm512_loadu_si512(k0 + (P + p) * 32);
      const __m512bh k2v = (__m512bh)_mm512_loadu_si512(k0 + (2 * P + p) * 32);
      const __m512bh k3v = (__m512bh)_mm512_loadu_si512(k0 + (3 * P + p) * 32);
      for (int r = 0; r < R; ++r) {
        const __m512bh qb = (__m512bh)_mm512_set1_epi32(static_cast<int>(qw[r * 128 + p]));
        a[r][0] = _mm512_dpbf16_ps(a[r][0], qb, k0v);
        a[r][1] = _mm512_dpbf16_ps(a[r][1], qb, k1v);
        a[r][2] = _mm512_dpbf16_ps(a[r][2], qb, k2v);
        a[r][3] = _mm512_dpbf16_ps(a[r][3], qb, k3v);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < 4; ++c) finish(a[r][c], r, jb + c);
  }
  for (; jb < nb; ++jb) {
    __m512 a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
    const std::uint16_t* k0 = kpk + jb * P * 32;
    for (std::int64_t p = 0; p < P; ++p) {
      const __m512bh kv = (__m512bh)_mm512_loadu_si512(k0 + p * 32);
      for (int r = 0; r < R; ++r)
        a[r] = _mm512_dpbf16_ps(a[r], (__m512bh)_mm512_set1_epi32(static_cast<int>(qw[r * 128 + p])), kv);
    }
    for (int r = 0; r < R; ++r) finish(a[r], r, jb);
  }
  for (int r = 0; r < R; ++r) vmax[r] = mx[r];
}

// Weighted sums of R rows of probabilities (row r at probs + r * lp, n keys) over the packed
// values: NC chunks of 16 output lanes (D rounded up to 16 = 16 NC).
template <int R, int NC>
LLI_BF16_TARGET void values_block(const std::uint16_t* probs, std::int64_t lp, const std::uint16_t* vpk, std::int64_t n,
                                  std::int64_t D, std::uint16_t* out, std::int64_t lo) {
  constexpr std::int64_t D16 = 16 * NC;
  const std::int64_t nt = (n + 1) / 2;
  __m512 acc[R][NC];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NC; ++c) acc[r][c] = _mm512_setzero_ps();
  for (std::int64_t t = 0; t < nt; ++t) {
    __m512bh pb[R];
    for (int r = 0; r < R; ++r) {
      std::uint32_t pw;
      std::memcpy(&pw, probs + r * lp + 2 * t, sizeof pw);
      pb[r] = (__m512bh)_mm512_set1_epi32(static_cast<int>(pw));
    }
    const std::uint16_t* vr = vpk + t * D16 * 2;
    for (int c = 0; c < NC; ++c) {
      const __m512bh v = (__m512bh)_mm512_loadu_si512(vr + 32 * c);
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pb[r], v);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NC; ++c) {
      const std::int64_t left = D - 16 * c;
      const __mmask16 m = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
      _mm256_mask_storeu_epi16(out + r * lo + 16 * c, m, (__m256i)_mm512_cvtneps_pbh(acc[r][c]));
    }
}

// Rows per values_block call for NC output chunks (R * NC accumulators + R broadcasts + 1 value
// vector within the 32 vector registers).
constexpr int value_rows(int nc) { return nc <= 6 ? 4 : nc <= 13 ? 2 : 1; }

template <int NC>
LLI_BF16_TARGET void values_rows(const std::uint16_t* probs, std::int64_t lp, const std::uint16_t* vpk, std::int64_t n,
                                 std::int64_t D, std::uint16_t* out, std::int64_t lo) {
  constexpr int R = value_rows(NC);
  for (int r0 = 0; r0 < kRowBlock; r0 += R)
    values_block<R, NC>(probs + r0 * lp, lp, vpk, n, D, out + r0 * lo, lo);
}

// kRowBlock consecutive query rows (row stride D) against packed keys/values, all n keys visible.
// scores: kRowBlock * ld floats, probs: kRowBlock * lp bf16 (ld = 16 nb, lp = 16 nb + 2).
LLI_BF16_TARGET void attend_rows_packed(const std::uint16_t* qrows, const std::uint16_t* kpk, const std::uint16_t* vpk,
                                        std::int64_t n, std::int64_t D, bool divide, float divisor, float* scores,
                                        std::uint16_t* probs, std::uint16_t* out) {
  const std::int64_t nb = (n + 15) / 16, ld = 16 * nb, lp = 16 * nb + 2;
  std::uint32_t qw[kRowBlock * 128];
  for (int r = 0; r < kRowBlock; ++r) query_pairs(qrows + r * D, D, qw + r * 128);
  __m512 vmax[kRowBlock];
  scores_block(qw, kpk, n, D, divide, divisor, scores, ld, vmax);
  for (int r = 0; r < kRowBlock; ++r) softmax_to_bf16(scores + r * ld, nb, vmax[r], probs + r * lp);
  switch ((D + 15) / 16) {
#define LLI_VALUES_CASE(nc) \
  case nc:                  \
    values_rows<nc>(probs, lp, vpk, n, D, out, D); \
    break;
    LLI_VALUES_CASE(1) LLI_VALUES_CASE(2) LLI_VALUES_CASE(3) LLI_VALUES_CASE(4) LLI_VALUES_CASE(5)
    LLI_VALUES_CASE(6) LLI_VALUES_CASE(7) LLI_VALUES_CASE(8) LLI_VALUES_CASE(9) LLI_VALUES_CASE(10)
    LLI_VALUES_CASE(11) LLI_VALUES_CASE(12) LLI_VALUES_CASE(13) LLI_VALUES_CASE(14) LLI_VALUES_CASE(15)
    LLI_VALUES_CASE(16)
#undef LLI_VALUES_CASE
    default:
      break;
  }
}

#endif  // LLI_HAVE_BF16_KERNEL

}  // namespace

namespace {
// attention_bf16's requirements on the operands (any number of query rows).
bool supported(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask,
               const AttentionOptions& opt) {
#if LLI_HAVE_BF16_KERNEL
  if (!bf16_kernels_available() || mask.defined() || opt.rel_h.defined() || opt.rel_w.defined()) return false;
  for (const auto* t : {&q, &k, &v})
    if (t->scalar_type() != torch::kBFloat16 || !t->device().is_cpu() || t->dim() != 4 || t->stride(3) != 1 ||
        t->requires_grad())
      return false;
  const auto D = q.size(3);
  if (D < 1 || D > 256 || k.size(3) != D || v.size(3) != D) return false;
  if (q.size(2) < 1) return false;
  if (k.size(0) != q.size(0) || v.size(0) != q.size(0) || v.size(1) != k.size(1) || v.size(2) != k.size(2))
    return false;
  if (k.size(1) < 1 || q.size(1) % k.size(1) != 0 || k.size(2) < 1) return false;
  return true;
#else
  return false;
#endif
}
}  // namespace

bool attention_bf16_applicable(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& mask, const AttentionOptions& opt) {
  // Many query rows with an fp32 softmax (LLaMA prefill): the eager path's fp32 score passes and
  // their fresh memory cost more than this kernel. Many rows with a bf16 softmax (CLIP): the eager
  // path (oneDNN matmuls) is as fast at 577 tokens (LLaVA's CLIP-L/336), slower at 3,601 (OWLv2's
  // 960-px tower: vision 4.27 s eager vs 2.71 s fused, bf16, 2 threads): opt.fused_long.
  return supported(q, k, v, mask, opt) && (q.size(2) <= kAttentionBF16MaxQueries || opt.softmax_fp32 || opt.fused_long);
}

torch::Tensor attention_bf16(const torch::Tensor& q0, const torch::Tensor& k, const torch::Tensor& v,
                             const AttentionOptions& opt) {
#if LLI_HAVE_BF16_KERNEL
  RECORD_FUNCTION("lli::attention_bf16", std::vector<c10::IValue>());  // named in operator profiles
  if (!supported(q0, k, v, {}, opt))
    throw RuntimeError("attention_bf16: operands not supported (see attention_bf16_applicable)");
  const auto B = q0.size(0), H = q0.size(1), Lq = q0.size(2), D = q0.size(3);
  const auto Hkv = k.size(1), Lk = k.size(2), n_rep = H / Hkv;
  // Scaled query as the eager path computes it (bf16 multiply), contiguous [B, H, Lq, D].
  auto q = (opt.scale_mode == AttentionScale::multiply_query ? q0 * opt.scale : q0).contiguous();
  auto out = torch::empty({B, H, Lq, D}, q0.options());
  const auto* qp = static_cast<const std::uint16_t*>(q.data_ptr());
  const auto* kp = static_cast<const std::uint16_t*>(k.data_ptr());
  const auto* vp = static_cast<const std::uint16_t*>(v.data_ptr());
  auto* op = static_cast<std::uint16_t*>(out.data_ptr());
  const Strides ks{k.stride(0), k.stride(1), k.stride(2)}, vs{v.stride(0), v.stride(1), v.stride(2)};
  const bool divide = opt.scale_mode == AttentionScale::divide_scores;
  const float divisor = static_cast<float>(opt.scale);
  if (Lq >= kPackedMinQueries) {
    // One task per (b, h): repack its key/value head, then run the Lq query rows. Scratch is
    // per thread and kept (no fresh memory per call once grown).
    const std::int64_t P = (D + 1) / 2, D16 = (D + 15) / 16 * 16, nb = (Lk + 15) / 16;
    at::parallel_for(0, B * H, 1, [&](std::int64_t t0, std::int64_t t1) {
      thread_local std::vector<std::uint16_t> kpk, vpk, probs;
      thread_local std::vector<float> scores;
      kpk.resize(static_cast<std::size_t>(nb * P * 32));
      vpk.resize(static_cast<std::size_t>((Lk + 1) / 2 * D16 * 2));
      probs.resize(static_cast<std::size_t>(kRowBlock * (nb * 16 + 2)));
      scores.resize(static_cast<std::size_t>(kRowBlock * nb * 16));
      std::int64_t packed = -1;  // (b, hk) currently packed
      for (std::int64_t t = t0; t < t1; ++t) {
        const auto b = t / H, h = t % H, hk = h / n_rep;
        if (packed != b * Hkv + hk) {
          pack_keys(kp + b * ks.b + hk * ks.h, ks.l, Lk, D, kpk.data());
          pack_values(vp + b * vs.b + hk * vs.h, vs.l, Lk, D, vpk.data());
          packed = b * Hkv + hk;
        }
        std::int64_t i = 0;
        if (!opt.causal)  // blocks of kRowBlock rows, then the rest one by one
          for (; i + kRowBlock <= Lq; i += kRowBlock) {
            const auto row = (t * Lq + i) * D;
            attend_rows_packed(qp + row, kpk.data(), vpk.data(), Lk, D, divide, divisor, scores.data(), probs.data(),
                               op + row);
          }
        for (; i < Lq; ++i) {
          const std::int64_t n = opt.causal ? std::min(Lk, i + opt.causal_offset + 1) : Lk;
          const auto row = (t * Lq + i) * D;
          if (n <= 0) {
            for (std::int64_t d = 0; d < D; ++d) op[row + d] = 0x7fc0;
            continue;
          }
          attend_row_packed(qp + row, kpk.data(), vpk.data(), n, D, divide, divisor, scores.data(), probs.data(),
                            op + row);
        }
      }
    });
    return out;
  }

  // Few rows (decoding): one task per (b, h) reading the cache rows in place.
  at::parallel_for(0, B * H, 1, [&](std::int64_t t0, std::int64_t t1) {
    std::vector<float> scores(static_cast<std::size_t>(Lk));
    for (std::int64_t t = t0; t < t1; ++t) {
      const auto b = t / H, h = t % H, hk = h / n_rep;
      const auto* kh = kp + b * ks.b + hk * ks.h;
      const auto* vh = vp + b * vs.b + hk * vs.h;
      for (std::int64_t i = 0; i < Lq; ++i) {
        const std::int64_t n = opt.causal ? std::min(Lk, i + opt.causal_offset + 1) : Lk;
        const auto row = (t * Lq + i) * D;
        if (n <= 0) {  // nothing visible: the eager softmax of all -inf rows is NaN
          for (std::int64_t d = 0; d < D; ++d) op[row + d] = 0x7fc0;
          continue;
        }
        attend_row(qp + row, kh, ks.l, vh, vs.l, n, D, divide, divisor, scores.data(), op + row);
      }
    }
  });
  return out;
#else
  (void)q0;
  (void)k;
  (void)v;
  (void)opt;
  throw RuntimeError("attention_bf16: not compiled for this architecture");
#endif
}

}  // namespace lli::nn
