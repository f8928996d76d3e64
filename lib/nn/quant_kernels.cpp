// Ref: llama.cpp ggml-quants.c (quantize_row_q8_0_ref, make_qkx2_quants, nearest_int) and
// ggml-cpu quants.c (ggml_vec_dot_q8_0_q8_0, ggml_vec_dot_q4_K_q8_K); see quant_kernels.h.
#include "nn/quant_kernels.h"

#include "io/dtype_convert.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "lli/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() (`__Y = __Y`), which
// -Wmaybe-uninitialized reports at every inlined use (GCC bug 105593); nothing is uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define LLI_QUANT_X86 1
#else
#define LLI_QUANT_X86 0
#endif

namespace lli::nn::quant {

namespace {

// Round to nearest, ties to even, for |v| < 2^22 (callers clamp first): adding 1.5 * 2^23
// leaves no fraction bits, so the fp32 addition itself rounds (llama.cpp's nearest_int).
inline float rne(float v) {
  constexpr float kMagic = 12582912.0f;
  return (v + kMagic) - kMagic;
}

inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

void check_k(const char* what, std::int64_t K) {
  if (K <= 0 || K % kBlock != 0)
    throw ModelError(std::string(what) + ": K = " + std::to_string(K) + " is not a positive multiple of " +
                     std::to_string(kBlock));
}

// Row n of a bf16 matrix as fp32 in a per-thread buffer.
const float* bf16_row(const std::uint16_t* w, std::int64_t K, std::int64_t n) {
  thread_local std::vector<float> buf;
  buf.resize(static_cast<std::size_t>(K));
  const std::uint16_t* src = w + n * K;
  for (std::int64_t k = 0; k < K; ++k) buf[k] = st::bf16_to_f32(src[k]);
  return buf.data();
}

// ---- q8_0 ----

void q8_0_row(const float* w, std::int64_t K, std::int8_t* qs, std::uint16_t* d) {
  for (std::int64_t g = 0; g < K / kBlock; ++g) {
    const float* x = w + g * kBlock;
    float amax = 0.0f;
    for (int i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
    const std::uint16_t h = st::f32_to_f16(std::min(amax / 127.0f, 65504.0f));
    const float dv = st::f16_to_f32(h);
    const float id = dv > 0.0f ? 1.0f / dv : 0.0f;
    for (int i = 0; i < kBlock; ++i)
      qs[g * kBlock + i] = static_cast<std::int8_t>(rne(clampf(x[i] * id, -127.0f, 127.0f)));
    d[g] = h;
  }
}

// ---- q4_k ----

// Squared error of x ~ s * L + off over one block, from the block's sums (in double: the terms
// cancel down to a few percent of sum x^2).
inline double block_error(double s, double off, double sl, double sl2, double sxl, double sx, double sx2) {
  return s * s * sl2 + 2.0 * s * off * sl - 2.0 * s * sxl + kBlock * off * off - 2.0 * off * sx + sx2;
}

// Scale d >= 0 and minimum m >= 0 for one block (x ~ d * q - m, q in 0..15), minimising the
// squared error: candidate inverse scales (14 .. 16) / (hi - lo) on [lo, hi], each followed by the
// least-squares (d, m) for its q (m clamped to >= 0), as llama.cpp's make_qkx2_quants with unit
// weights; the plain round-to-nearest on [lo, hi] is kept when nothing beats it. Measured on
// Gaussian weights (K = 4096, N = 256, relative Frobenius error of W x with fp32 x, one run):
// round-to-nearest 7.2 %; 9 candidates 5.85 % (41 M weights/s); 21 candidates 6.0 % (22 M/s);
// 5 candidates + 2 rounds of "round with (d, m), refit" 5.6 % (21 M/s).
void fit_block_q4(const float* x, float* d_out, float* m_out) {
  constexpr float kMaxQ = 15.0f;
  constexpr float kRMin = -1.0f, kRDelta = 0.25f;
  constexpr int kSteps = 8;
  float lo = 0.0f, hi = x[0];
  for (int i = 0; i < kBlock; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (!(hi > lo)) {  // all values equal lo <= 0 (a zero block included)
    *d_out = 0.0f;
    *m_out = -lo;
    return;
  }
  float sum_x = 0.0f, sum_x2 = 0.0f;
  for (int i = 0; i < kBlock; ++i) {
    sum_x += x[i];
    sum_x2 += x[i] * x[i];
  }
  struct Sums {
    float l, l2, xl;
  };
  // Sums of q, q^2 and x q for q = rne((x - lo) * iscale) in 0..15.
  auto sums = [&](float iscale) {
    std::int32_t l1 = 0, l2 = 0;
    float xl = 0.0f;
    for (int i = 0; i < kBlock; ++i) {
      const auto l = static_cast<std::int32_t>(rne(clampf((x[i] - lo) * iscale, 0.0f, kMaxQ)));
      l1 += l;
      l2 += l * l;
      xl += x[i] * static_cast<float>(l);
    }
    return Sums{static_cast<float>(l1), static_cast<float>(l2), xl};
  };
  // Least-squares x ~ s * q + off for given q (off <= 0); false when degenerate.
  auto refit = [&](const Sums& q, float* s, float* off) {
    const float D = kBlock * q.l2 - q.l * q.l;
    if (!(D > 0.0f)) return false;
    *s = (kBlock * q.xl - sum_x * q.l) / D;
    *off = (q.l2 * sum_x - q.l * q.xl) / D;
    if (*off > 0.0f) {  // the minimum term must stay >= 0 (zero representable)
      *off = 0.0f;
      *s = q.xl / q.l2;
    }
    return *s > 0.0f;
  };
  float best_d = (hi - lo) / kMaxQ, best_off = lo;
  Sums q = sums(1.0f / best_d);
  double best_err = block_error(best_d, best_off, q.l, q.l2, q.xl, sum_x, sum_x2);
  for (int is = 0; is <= kSteps; ++is) {
    float s, off;
    q = sums((kRMin + kRDelta * is + kMaxQ) / (hi - lo));
    if (!refit(q, &s, &off)) continue;
    const double e = block_error(s, off, q.l, q.l2, q.xl, sum_x, sum_x2);
    if (e < best_err) {
      best_err = e;
      best_d = s;
      best_off = off;
    }
  }
  *d_out = best_d;
  *m_out = -best_off;
}

void q4_k_row(const float* w, std::int64_t K, std::uint8_t* qs, std::uint8_t* sc, std::uint8_t* mn, float* row) {
  const std::int64_t G = K / kBlock;
  thread_local std::vector<float> dm;
  dm.resize(static_cast<std::size_t>(2 * G));
  float dmax = 0.0f, mmax = 0.0f;
  for (std::int64_t g = 0; g < G; ++g) {
    fit_block_q4(w + g * kBlock, &dm[2 * g], &dm[2 * g + 1]);
    dmax = std::max(dmax, dm[2 * g]);
    mmax = std::max(mmax, dm[2 * g + 1]);
  }
  const float S = dmax / 255.0f, M = mmax / 255.0f;
  const float iS = S > 0.0f ? 1.0f / S : 0.0f, iM = M > 0.0f ? 1.0f / M : 0.0f;
  for (std::int64_t g = 0; g < G; ++g) {
    const float* x = w + g * kBlock;
    // The 8-bit scale and minimum: both roundings (down, up) of each are tried with their
    // round-to-nearest q and the pair with the least squared error kept (matters when a block's
    // scale is far below the row's largest: sc = 2 or 3 is a coarse scale).
    const float sf = std::floor(clampf(dm[2 * g] * iS, 0.0f, 255.0f));
    const float mf = std::floor(clampf(dm[2 * g + 1] * iM, 0.0f, 255.0f));
    float best_err = std::numeric_limits<float>::infinity();
    std::uint8_t q[kBlock], qb[kBlock] = {};
    sc[g] = static_cast<std::uint8_t>(sf);
    mn[g] = static_cast<std::uint8_t>(mf);
    for (float s8 = sf; s8 <= std::min(sf + 1.0f, 255.0f); s8 += 1.0f)
      for (float m8 = mf; m8 <= std::min(mf + 1.0f, 255.0f); m8 += 1.0f) {
        const float dq = s8 * S, mq = m8 * M;
        const float id = dq > 0.0f ? 1.0f / dq : 0.0f;
        float err = 0.0f;
        for (int i = 0; i < kBlock; ++i) {
          q[i] = static_cast<std::uint8_t>(rne(clampf((x[i] + mq) * id, 0.0f, 15.0f)));
          const float e = dq * static_cast<float>(q[i]) - mq - x[i];
          err += e * e;
        }
        if (err < best_err) {
          best_err = err;
          sc[g] = static_cast<std::uint8_t>(s8);
          mn[g] = static_cast<std::uint8_t>(m8);
          std::copy(q, q + kBlock, qb);
        }
      }
    for (int j = 0; j < kBlock / 2; ++j) qs[g * (kBlock / 2) + j] = static_cast<std::uint8_t>(qb[j] | (qb[j + 16] << 4));
  }
  row[0] = S;
  row[1] = M;
}

// ---- activations ----

void acts_row(const float* x, std::int64_t K, std::int8_t* q, float* d, std::int32_t* sum) {
  for (std::int64_t g = 0; g < K / kBlock; ++g) {
    const float* b = x + g * kBlock;
    float amax = 0.0f;
    for (int i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(b[i]));
    const float dv = amax / 127.0f;
    const float id = dv > 0.0f ? 1.0f / dv : 0.0f;
    std::int32_t s = 0;
    for (int i = 0; i < kBlock; ++i) {
      const auto v = static_cast<std::int8_t>(rne(clampf(b[i] * id, -127.0f, 127.0f)));
      q[g * kBlock + i] = v;
      s += v;
    }
    d[g] = dv;
    sum[g] = s;
  }
}

void acts_prepare(std::int64_t M, std::int64_t K, QActs* out) {
  check_k("quantize_acts", K);
  if (M < 0) throw RuntimeError("quantize_acts: M = " + std::to_string(M) + " is negative");
  out->M = M;
  out->K = K;
  out->q.resize(static_cast<std::size_t>(M * K));
  out->d.resize(static_cast<std::size_t>(M * (K / kBlock)));
  out->sum.resize(static_cast<std::size_t>(M * (K / kBlock)));
  out->qh.assign(static_cast<std::size_t>(M * out->kh()), 0);
}

// QActs::qh of row m from its q.
void acts_reorder(QActs* a, std::int64_t m) {
  const std::int8_t* q = a->q.data() + m * a->K;
  std::int8_t* h = a->qh.data() + m * a->kh();
  for (std::int64_t g = 0; g < a->K / kBlock; ++g) {
    std::int8_t* dst = h + (g / 4) * 128 + (g % 4) * 16;
    std::memcpy(dst, q + g * kBlock, 16);
    std::memcpy(dst + 64, q + g * kBlock + 16, 16);
  }
}

// ---- reference kernels ----

void ref_q8_0(const QMatrix& w, const QActs& x, std::int64_t n0, std::int64_t n1, float* y, std::int64_t ldy) {
  const std::int64_t K = w.K, G = K / kBlock;
  const auto* qs = static_cast<const std::int8_t*>(w.qs);
  for (std::int64_t n = n0; n < n1; ++n)
    for (std::int64_t m = 0; m < x.M; ++m) {
      float acc = 0.0f;
      for (std::int64_t g = 0; g < G; ++g) {
        const std::int8_t* a = qs + n * K + g * kBlock;
        const std::int8_t* b = x.q.data() + m * K + g * kBlock;
        std::int32_t isum = 0;
        for (int i = 0; i < kBlock; ++i) isum += a[i] * b[i];
        acc += (st::f16_to_f32(w.d[n * G + g]) * x.d[m * G + g]) * static_cast<float>(isum);
      }
      y[m * ldy + n] = acc;
    }
}

void ref_q4_k(const QMatrix& w, const QActs& x, std::int64_t n0, std::int64_t n1, float* y, std::int64_t ldy) {
  const std::int64_t K = w.K, G = K / kBlock;
  const auto* qs = static_cast<const std::uint8_t*>(w.qs);
  for (std::int64_t n = n0; n < n1; ++n)
    for (std::int64_t m = 0; m < x.M; ++m) {
      float acc = 0.0f, acc_min = 0.0f;
      for (std::int64_t g = 0; g < G; ++g) {
        const std::uint8_t* a = qs + n * (K / 2) + g * (kBlock / 2);
        const std::int8_t* b = x.q.data() + m * K + g * kBlock;
        std::int32_t isum = 0;
        for (int j = 0; j < kBlock / 2; ++j) isum += (a[j] & 0x0F) * b[j] + (a[j] >> 4) * b[j + 16];
        const float dx = x.d[m * G + g];
        acc += (w.sc[n * G + g] * dx) * static_cast<float>(isum);
        acc_min += (w.mn[n * G + g] * dx) * static_cast<float>(x.sum[m * G + g]);
      }
      y[m * ldy + n] = w.row[2 * n] * acc - w.row[2 * n + 1] * acc_min;
    }
}

// ---- SIMD kernels ----
// The driver walks the output rows in blocks of 64 (their weights stay in L2 while every group of
// up to 4 activation rows passes over them) and, inside a block, R weight rows side by side.
// Measured single-threaded on this machine (AMD EPYC, 4096 x 11008, M = 1): one row at a time
// (one sequential read stream) is the fastest, 19 GB/s (q4_k) and 22 GB/s (q8_0) against a plain
// one-stream read's 23-28; 2, 4 and 8 rows side by side read at 14, 10 and 10 GB/s (q4_k), as a
// plain read of 4 or 8 streams also is slower here; software prefetching gained nothing then (it
// does with the later unmasked, two-accumulator loop: see kQuantPrefetch). For M = 2 and 4 one
// row was also as fast or faster (q8_0 M = 2: 17 GB/s against 10 with 2 rows).

#if LLI_QUANT_X86

template <class Kern, int MB>
void rows_mb(const QMatrix& w, const QActs& x, std::int64_t m0, std::int64_t n0, std::int64_t n1, float* y,
             std::int64_t ldy) {
  constexpr int R = Kern::rows(MB);
  std::int64_t n = n0;
  for (; n + R <= n1; n += R) Kern::template block<MB, R>(w, x, m0, n, y, ldy);
  for (; n < n1; ++n) Kern::template block<MB, 1>(w, x, m0, n, y, ldy);
}

template <class Kern>
void run_rows(const QMatrix& w, const QActs& x, std::int64_t n0, std::int64_t n1, float* y, std::int64_t ldy) {
  constexpr std::int64_t kRowBlock = 64;
  for (std::int64_t nb = n0; nb < n1; nb += kRowBlock) {
    const std::int64_t ne = std::min(n1, nb + kRowBlock);
    for (std::int64_t m0 = 0; m0 < x.M; m0 += 4) {
      switch (std::min<std::int64_t>(4, x.M - m0)) {
        case 1: rows_mb<Kern, 1>(w, x, m0, nb, ne, y, ldy); break;
        case 2: rows_mb<Kern, 2>(w, x, m0, nb, ne, y, ldy); break;
        case 3: rows_mb<Kern, 3>(w, x, m0, nb, ne, y, ldy); break;
        default: rows_mb<Kern, 4>(w, x, m0, nb, ne, y, ldy); break;
      }
    }
  }
}

#define LLI_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define LLI_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

// Sum of the lanes (through memory, as in linear_bf16.cpp: GCC 12's reduce intrinsics trip a
// false -Wmaybe-uninitialized).
LLI_VNNI_TARGET inline float hsum512(__m512 v) {
  alignas(64) float l[16];
  _mm512_store_ps(l, v);
  return ((l[0] + l[8]) + (l[4] + l[12])) + ((l[2] + l[10]) + (l[6] + l[14])) +
         (((l[1] + l[9]) + (l[5] + l[13])) + ((l[3] + l[11]) + (l[7] + l[15])));
}

LLI_AVX2_TARGET inline float hsum256(__m256 v) {
  alignas(32) float l[8];
  _mm256_store_ps(l, v);
  return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

// AVX-512 VNNI. A step covers a pair of blocks (64 inputs) of R weight rows and MB activation
// rows: vpdpbusd (u8 x s8 -> s32) leaves block 2p's partial sums in lanes 0-7 and block 2p+1's in
// lanes 8-15; they are converted to fp32 and multiplied by that lane's block scale
// (w_scale * x_scale, gathered by a permute from a vector of 16 block scales), so no horizontal
// sum happens before the end of the row. A chunk is 16 blocks (one vector of scales).
struct VnniPair {
  // Lanes 0-7 -> 2p, lanes 8-15 -> 2p + 1.
  LLI_VNNI_TARGET static __m512i index(int p) {
    return _mm512_add_epi32(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), _mm512_set1_epi32(2 * p));
  }
  // 64 activation bytes of a pair, or only the first block's 32 (the rest zero) for a lone block.
  LLI_VNNI_TARGET static __m512i load_x(const std::int8_t* p, bool full) {
    return full ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(0xFFFFFFFFull, p);
  }
};

// Shared by the two VNNI kernels: zeroed accumulators, and the per-block scale products of a
// chunk of 16 blocks, sdx[r][m] = ws[r] * d_x[m] (zero past the last block: mask k16).
template <int R, int MB>
LLI_VNNI_TARGET inline void zero_acc(__m512 (&acc)[R][MB]) {
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) acc[r][m] = _mm512_setzero_ps();
}

template <int R, int MB>
LLI_VNNI_TARGET inline void chunk_scales(const __m512 (&ws)[R], const float* xd, std::int64_t G, std::int64_t g0,
                                         __mmask16 k16, __m512 (&sdx)[R][MB]) {
  for (int m = 0; m < MB; ++m) {
    const __m512 dx = _mm512_maskz_loadu_ps(k16, xd + m * G + g0);
    for (int r = 0; r < R; ++r) sdx[r][m] = _mm512_mul_ps(ws[r], dx);
  }
}

// q4_k: a step covers 4 blocks (128 inputs, 64 bytes of nibbles) of a weight row: the low
// nibbles are q_0..15 and the high nibbles q_16..31 of each block, which QActs::qh lays out the
// same way, so two vpdpbusd leave block b's sum in lanes 4b..4b+3 with no shuffle.
// The chunks of 16 blocks are compiled twice: full ones with constant trip counts and no masks
// (every chunk when K % 512 == 0), and a masked last one. Steps alternate between two
// accumulators (the FMA's latency no longer chains every step), and each step prefetches the
// weights kQuantPrefetch bytes ahead. Measured on this 2-core VM (scratch bench: 16 layers of 7B
// shapes, 1.83 GB, 2 threads, one parallel region per matrix, min of 11 interleaved passes, M = 1):
// this kernel 59.4 GB/s against a plain read of the same bytes at 67.1; the kernel before it (one
// accumulator, masks in every chunk, no prefetch) 47.5 against 62.4 in the next run. Prefetch
// distance, in a scratch copy of the loop: 1, 2, 4, 8, 16 KiB gave 48.9, 49.8, 53.0, 53.4, 53.4 GB/s.
constexpr int kQuantPrefetch = 4096;

struct Q4kVnni {
  static constexpr int rows(int) { return 1; }

  template <int MB, int R>
  LLI_VNNI_TARGET static void block(const QMatrix& w, const QActs& x, std::int64_t m0, std::int64_t n, float* y,
                                    std::int64_t ldy) {
    const std::int64_t G = w.K / kBlock;
    __m512 acc[2][R][MB], macc[R][MB];  // the dot products (two per row: even and odd steps), and
                                        // the minimum terms sum_g mn * d_x * xsum
    zero_acc(acc[0]);
    zero_acc(acc[1]);
    zero_acc(macc);
    std::int64_t g0 = 0;
    for (; g0 + 16 <= G; g0 += 16) chunk<MB, R, true>(w, x, m0, n, g0, acc, macc);
    if (g0 < G) chunk<MB, R, false>(w, x, m0, n, g0, acc, macc);
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < MB; ++m)
        y[(m0 + m) * ldy + n + r] = w.row[2 * (n + r)] * hsum512(_mm512_add_ps(acc[0][r][m], acc[1][r][m])) -
                                    w.row[2 * (n + r) + 1] * hsum512(macc[r][m]);
  }

  // Blocks [g0, g0 + 16) of rows n..n+R-1 (Full), or [g0, G) of a last partial chunk.
  template <int MB, int R, bool Full>
  LLI_VNNI_TARGET static inline void chunk(const QMatrix& w, const QActs& x, std::int64_t m0, std::int64_t n,
                                           std::int64_t g0, __m512 (&acc)[2][R][MB], __m512 (&macc)[R][MB]) {
    const std::int64_t K = w.K, G = K / kBlock, KH = x.kh();
    const auto* qs = static_cast<const std::uint8_t*>(w.qs) + n * (K / 2);
    const std::uint8_t* sc = w.sc + n * G;
    const std::uint8_t* mn = w.mn + n * G;
    const std::int8_t* xh = x.qh.data() + m0 * KH;
    const float* xd = x.d.data() + m0 * G;
    const std::int32_t* xs = x.sum.data() + m0 * G;
    const __m512i nib = _mm512_set1_epi8(0x0F);
    const __m512i quad = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const int ng = Full ? 16 : static_cast<int>(G - g0);
    const auto k16 = static_cast<__mmask16>(Full ? 0xFFFF : (1u << ng) - 1);
    __m512 ws[R], sdx[R][MB];  // sc, and sc * d_x, per block of the chunk
    for (int r = 0; r < R; ++r)
      ws[r] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k16, sc + r * G + g0)));
    chunk_scales(ws, xd, G, g0, k16, sdx);
    for (int m = 0; m < MB; ++m) {
      const __m512 dxs = _mm512_mul_ps(_mm512_maskz_loadu_ps(k16, xd + m * G + g0),
                                       _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(k16, xs + m * G + g0)));
      for (int r = 0; r < R; ++r)
        macc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k16, mn + r * G + g0))),
                                     dxs, macc[r][m]);
    }
    for (int q = 0; 4 * q < ng; ++q) {
      const std::int64_t g = g0 + 4 * q;
      const int nb = Full ? 4 : std::min(4, ng - 4 * q);
      const __m512i iq = _mm512_add_epi32(quad, _mm512_set1_epi32(4 * q));
      __m512i xl[MB], xu[MB];
      for (int m = 0; m < MB; ++m) {
        xl[m] = _mm512_loadu_si512(xh + m * KH + g * 32);
        xu[m] = _mm512_loadu_si512(xh + m * KH + g * 32 + 64);
      }
      for (int r = 0; r < R; ++r) {
        const std::uint8_t* src = qs + r * (K / 2) + g * (kBlock / 2);
        _mm_prefetch(reinterpret_cast<const char*>(src) + kQuantPrefetch, _MM_HINT_T0);  // never faults
        const __m512i v = nb == 4 ? _mm512_loadu_si512(src) : _mm512_maskz_loadu_epi8(~0ull >> (64 - 16 * nb), src);
        const __m512i lo = _mm512_and_si512(v, nib), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
        for (int m = 0; m < MB; ++m) {
          const __m512i isum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xl[m]), hi, xu[m]);
          acc[q & 1][r][m] =
              _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_permutexvar_ps(iq, sdx[r][m]), acc[q & 1][r][m]);
        }
      }
    }
  }
};

// q8_0: the same chunk structure as Q4kVnni (full chunks without masks, two accumulators, weights
// prefetched ahead). Same scratch bench (8 layers of 7B shapes, 1.72 GB, 3 alternating runs):
// 47.9-49.1 GB/s before, 56.5-58.5 after.
struct Q8Vnni {
  static constexpr int rows(int) { return 1; }

  // s8 x s8 through u8 x s8: (q_w + 128) . q_x = q_w . q_x + 128 * xsum, so each pair's sums start
  // from -128 * xsum (one lane per block) and come out exact.
  template <int MB, int R>
  LLI_VNNI_TARGET static void block(const QMatrix& w, const QActs& x, std::int64_t m0, std::int64_t n, float* y,
                                    std::int64_t ldy) {
    const std::int64_t G = w.K / kBlock;
    __m512 acc[2][R][MB];
    zero_acc(acc[0]);
    zero_acc(acc[1]);
    std::int64_t g0 = 0;
    for (; g0 + 16 <= G; g0 += 16) chunk<MB, R, true>(w, x, m0, n, g0, acc);
    if (g0 < G) chunk<MB, R, false>(w, x, m0, n, g0, acc);
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < MB; ++m) y[(m0 + m) * ldy + n + r] = hsum512(_mm512_add_ps(acc[0][r][m], acc[1][r][m]));
  }

  template <int MB, int R, bool Full>
  LLI_VNNI_TARGET static inline void chunk(const QMatrix& w, const QActs& x, std::int64_t m0, std::int64_t n,
                                           std::int64_t g0, __m512 (&acc)[2][R][MB]) {
    const std::int64_t K = w.K, G = K / kBlock;
    const auto* qs = static_cast<const std::int8_t*>(w.qs) + n * K;
    const std::uint16_t* d = w.d + n * G;
    const std::int8_t* xq = x.q.data() + m0 * K;
    const float* xd = x.d.data() + m0 * G;
    const std::int32_t* xs = x.sum.data() + m0 * G;
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
    const int ng = Full ? 16 : static_cast<int>(G - g0);
    const auto k16 = static_cast<__mmask16>(Full ? 0xFFFF : (1u << ng) - 1);
    __m512 ws[R], sdx[R][MB];  // d_w, and d_w * d_x, per block of the chunk
    for (int r = 0; r < R; ++r) ws[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k16, d + r * G + g0));
    chunk_scales(ws, xd, G, g0, k16, sdx);
    __m512i corr[MB];  // -128 * xsum per block of the chunk
    for (int m = 0; m < MB; ++m)
      corr[m] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                 _mm512_slli_epi32(_mm512_maskz_loadu_epi32(k16, xs + m * G + g0), 7));
    for (int p = 0; 2 * p < ng; ++p) {
      const std::int64_t g = g0 + 2 * p;
      const bool full = Full || 2 * p + 1 < ng;
      const __m512i ip = VnniPair::index(p);
      __m512i xv[MB], c[MB];
      for (int m = 0; m < MB; ++m) {
        xv[m] = VnniPair::load_x(xq + m * K + g * kBlock, full);
        c[m] = _mm512_maskz_permutexvar_epi32(0x0101, ip, corr[m]);
      }
      for (int r = 0; r < R; ++r) {
        const std::int8_t* src = qs + r * K + g * kBlock;
        _mm_prefetch(reinterpret_cast<const char*>(src) + kQuantPrefetch, _MM_HINT_T0);
        const __m512i wu = _mm512_xor_si512(VnniPair::load_x(src, full), bias);
        for (int m = 0; m < MB; ++m) {
          const __m512i isum = _mm512_dpbusd_epi32(c[m], wu, xv[m]);
          acc[p & 1][r][m] =
              _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_permutexvar_ps(ip, sdx[r][m]), acc[p & 1][r][m]);
        }
      }
    }
  }
};

template <int R, int MB>
LLI_AVX2_TARGET inline void zero_acc(__m256 (&acc)[R][MB]) {
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) acc[r][m] = _mm256_setzero_ps();
}

// AVX2: one block (32 inputs) per step; vpmaddubsw (u8 x s8 -> s16 pairs) then vpmaddwd by ones
// (-> 8 s32 lanes), converted and multiplied by the block's broadcast scale.
struct Q4kAvx2 {
  static constexpr int rows(int mb) { return mb == 1 ? 4 : (mb == 2 ? 2 : 1); }

  template <int MB, int R>
  LLI_AVX2_TARGET static void block(const QMatrix& w, const QActs& x, std::int64_t m0, std::int64_t n, float* y,
                                    std::int64_t ldy) {
    const std::int64_t K = w.K, G = K / kBlock;
    const auto* qs = static_cast<const std::uint8_t*>(w.qs) + n * (K / 2);
    const std::int8_t* xq = x.q.data() + m0 * K;
    const float* xd = x.d.data() + m0 * G;
    const __m128i nib = _mm_set1_epi8(0x0F);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[R][MB];
    zero_acc(acc);
    for (std::int64_t g = 0; g < G; ++g) {
      __m256i xv[MB];
      for (int m = 0; m < MB; ++m) xv[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + m * K + g * kBlock));
      for (int r = 0; r < R; ++r) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + r * (K / 2) + g * (kBlock / 2)));
        const __m256i z = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), nib), _mm_and_si128(v, nib));
        const float s = w.sc[(n + r) * G + g];
        for (int m = 0; m < MB; ++m) {
          const __m256i isum = _mm256_madd_epi16(_mm256_maddubs_epi16(z, xv[m]), ones);
          acc[r][m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(s * xd[m * G + g]), acc[r][m]);
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < MB; ++m) {
        const std::uint8_t* mn = w.mn + (n + r) * G;
        float mt = 0.0f;
        for (std::int64_t g = 0; g < G; ++g) mt += mn[g] * (xd[m * G + g] * static_cast<float>(x.sum[(m0 + m) * G + g]));
        y[(m0 + m) * ldy + n + r] = w.row[2 * (n + r)] * hsum256(acc[r][m]) - w.row[2 * (n + r) + 1] * mt;
      }
  }
};

struct Q8Avx2 {
  static constexpr int rows(int mb) { return mb == 1 ? 4 : (mb == 2 ? 2 : 1); }

  // s8 x s8 with the sign trick: |q_x| (u8) times q_w carrying q_x's sign.
  template <int MB, int R>
  LLI_AVX2_TARGET static void block(const QMatrix& w, const QActs& x, std::int64_t m0, std::int64_t n, float* y,
                                    std::int64_t ldy) {
    const std::int64_t K = w.K, G = K / kBlock;
    const auto* qs = static_cast<const std::int8_t*>(w.qs) + n * K;
    const std::int8_t* xq = x.q.data() + m0 * K;
    const float* xd = x.d.data() + m0 * G;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[R][MB];
    zero_acc(acc);
    for (std::int64_t g = 0; g < G; ++g) {
      __m256i xv[MB], ax[MB];
      for (int m = 0; m < MB; ++m) {
        xv[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + m * K + g * kBlock));
        ax[m] = _mm256_sign_epi8(xv[m], xv[m]);
      }
      for (int r = 0; r < R; ++r) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + r * K + g * kBlock));
        const float dw = _cvtsh_ss(w.d[(n + r) * G + g]);
        for (int m = 0; m < MB; ++m) {
          const __m256i isum = _mm256_madd_epi16(_mm256_maddubs_epi16(ax[m], _mm256_sign_epi8(wv, xv[m])), ones);
          acc[r][m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dw * xd[m * G + g]), acc[r][m]);
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < MB; ++m) y[(m0 + m) * ldy + n + r] = hsum256(acc[r][m]);
  }
};

bool cpu_has_vnni() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
bool cpu_has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && st::cpu_has_f16c();
}

#else
bool cpu_has_vnni() { return false; }
bool cpu_has_avx2() { return false; }
#endif  // LLI_QUANT_X86

bool parse_kernel(const std::string& s, Kernel* k) {
  for (Kernel c : {Kernel::reference, Kernel::avx2, Kernel::avx512_vnni})
    if (s == kernel_name(c)) {
      *k = c;
      return true;
    }
  return false;
}

Kernel resolve_best_kernel() {
  const char* env = std::getenv("LLI_QUANT_KERNEL");
  if (env && *env) {
    Kernel k;
    if (!parse_kernel(env, &k))
      throw RuntimeError(std::string("LLI_QUANT_KERNEL = '") + env +
                         "' is not a kernel (expected reference, avx2 or avx512_vnni)");
    if (!kernel_supported(k))
      throw RuntimeError(std::string("LLI_QUANT_KERNEL = '") + env + "': this CPU does not support that kernel");
    return k;
  }
  if (cpu_has_vnni()) return Kernel::avx512_vnni;
  if (cpu_has_avx2()) return Kernel::avx2;
  return Kernel::reference;
}

}  // namespace

// ---- names ----

const char* qtype_name(QType t) { return t == QType::q8_0 ? "q8_0" : "q4_k"; }

bool parse_qtype(const std::string& s, QType* out) {
  for (QType t : {QType::q8_0, QType::q4_k})
    if (s == qtype_name(t)) {
      *out = t;
      return true;
    }
  return false;
}

double bits_per_weight(QType t) { return t == QType::q8_0 ? 8.5 : 4.5; }

QSizes qsizes(QType t, std::int64_t N, std::int64_t K) {
  check_k("qsizes", K);
  const std::int64_t G = K / kBlock;
  if (t == QType::q8_0) return {N * K, N * G * 2, 0, 0, 0};
  return {N * K / 2, 0, N * G, N * G, N * 2 * 4};
}

const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::automatic: return "automatic";
    case Kernel::reference: return "reference";
    case Kernel::avx2: return "avx2";
    case Kernel::avx512_vnni: return "avx512_vnni";
  }
  return "?";
}

bool kernel_supported(Kernel k) {
  switch (k) {
    case Kernel::automatic:
    case Kernel::reference: return true;
    case Kernel::avx2: return cpu_has_avx2();
    case Kernel::avx512_vnni: return cpu_has_vnni();
  }
  return false;
}

Kernel best_kernel() {
  static const Kernel k = resolve_best_kernel();
  return k;
}

// ---- quantization ----

void quantize_q8_0(const float* w, std::int64_t K, std::int64_t n0, std::int64_t n1, std::int8_t* qs,
                   std::uint16_t* d) {
  check_k("quantize_q8_0", K);
  for (std::int64_t n = n0; n < n1; ++n) q8_0_row(w + n * K, K, qs + n * K, d + n * (K / kBlock));
}

void quantize_q8_0_bf16(const std::uint16_t* w, std::int64_t K, std::int64_t n0, std::int64_t n1, std::int8_t* qs,
                        std::uint16_t* d) {
  check_k("quantize_q8_0", K);
  for (std::int64_t n = n0; n < n1; ++n) q8_0_row(bf16_row(w, K, n), K, qs + n * K, d + n * (K / kBlock));
}

void quantize_q4_k(const float* w, std::int64_t K, std::int64_t n0, std::int64_t n1, std::uint8_t* qs,
                   std::uint8_t* sc, std::uint8_t* mn, float* row) {
  check_k("quantize_q4_k", K);
  const std::int64_t G = K / kBlock;
  for (std::int64_t n = n0; n < n1; ++n) q4_k_row(w + n * K, K, qs + n * (K / 2), sc + n * G, mn + n * G, row + 2 * n);
}

void quantize_q4_k_bf16(const std::uint16_t* w, std::int64_t K, std::int64_t n0, std::int64_t n1,
                        std::uint8_t* qs, std::uint8_t* sc, std::uint8_t* mn, float* row) {
  check_k("quantize_q4_k", K);
  const std::int64_t G = K / kBlock;
  for (std::int64_t n = n0; n < n1; ++n)
    q4_k_row(bf16_row(w, K, n), K, qs + n * (K / 2), sc + n * G, mn + n * G, row + 2 * n);
}

// ---- dequantization ----

namespace {
void dequantize_row(const QMatrix& w, std::int64_t n, float* out) {
  const std::int64_t K = w.K, G = K / kBlock;
  if (w.type == QType::q8_0) {
    const auto* qs = static_cast<const std::int8_t*>(w.qs) + n * K;
    for (std::int64_t g = 0; g < G; ++g) {
      const float d = st::f16_to_f32(w.d[n * G + g]);
      for (int i = 0; i < kBlock; ++i) out[g * kBlock + i] = d * qs[g * kBlock + i];
    }
    return;
  }
  const auto* qs = static_cast<const std::uint8_t*>(w.qs) + n * (K / 2);
  const float S = w.row[2 * n], M = w.row[2 * n + 1];
  for (std::int64_t g = 0; g < G; ++g) {
    const float d = w.sc[n * G + g] * S, m = w.mn[n * G + g] * M;
    const std::uint8_t* b = qs + g * (kBlock / 2);
    float* o = out + g * kBlock;
    for (int j = 0; j < kBlock / 2; ++j) {
      o[j] = d * static_cast<float>(b[j] & 0x0F) - m;
      o[j + 16] = d * static_cast<float>(b[j] >> 4) - m;
    }
  }
}

void check_matrix(const char* what, const QMatrix& w, std::int64_t n0, std::int64_t n1) {
  check_k(what, w.K);
  if (n0 < 0 || n1 < n0 || n1 > w.N)
    throw RuntimeError(std::string(what) + ": rows [" + std::to_string(n0) + ", " + std::to_string(n1) +
                       ") are outside the matrix's " + std::to_string(w.N) + " rows");
  const bool ok = w.qs && (w.type == QType::q8_0 ? w.d != nullptr : (w.sc && w.mn && w.row));
  if (!ok) throw RuntimeError(std::string(what) + ": a " + qtype_name(w.type) + " array pointer is null");
}
}  // namespace

void dequantize_rows(const QMatrix& w, std::int64_t n0, std::int64_t n1, float* out) {
  check_matrix("dequantize_rows", w, n0, n1);
  for (std::int64_t n = n0; n < n1; ++n) dequantize_row(w, n, out + (n - n0) * w.K);
}

#if LLI_QUANT_X86
// One row as bf16 with AVX-512: the same fp32 values as dequantize_row (one multiplication, then
// one subtraction for q4_k), rounded to nearest even. Prefill dequantizes every weight per call,
// so this runs at memory speed instead of ~1 G weights/s.
__attribute__((target("avx512f,avx512bw"))) inline __m256i to_bf16x16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                                          _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

__attribute__((target("avx512f,avx512bw"))) void dequantize_row_bf16_avx512(const QMatrix& w, std::int64_t n,
                                                                            std::uint16_t* out) {
  const std::int64_t K = w.K, G = K / kBlock;
  if (w.type == QType::q8_0) {
    const auto* qs = static_cast<const std::int8_t*>(w.qs) + n * K;
    for (std::int64_t g = 0; g < G; ++g) {
      const __m512 d = _mm512_set1_ps(st::f16_to_f32(w.d[n * G + g]));
      const __m128i* b = reinterpret_cast<const __m128i*>(qs + g * kBlock);
      for (int h = 0; h < 2; ++h) {
        const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(b + h)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + g * kBlock + 16 * h), to_bf16x16(_mm512_mul_ps(d, q)));
      }
    }
    return;
  }
  const auto* qs = static_cast<const std::uint8_t*>(w.qs) + n * (K / 2);
  const float S = w.row[2 * n], M = w.row[2 * n + 1];
  for (std::int64_t g = 0; g < G; ++g) {
    const __m512 d = _mm512_set1_ps(w.sc[n * G + g] * S), m = _mm512_set1_ps(w.mn[n * G + g] * M);
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + g * (kBlock / 2)));
    const __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0F)), hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
    const __m512 ql = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), qh = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + g * kBlock), to_bf16x16(_mm512_sub_ps(_mm512_mul_ps(d, ql), m)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + g * kBlock + 16), to_bf16x16(_mm512_sub_ps(_mm512_mul_ps(d, qh), m)));
  }
}
#endif

void dequantize_rows_bf16(const QMatrix& w, std::int64_t n0, std::int64_t n1, std::uint16_t* out) {
  check_matrix("dequantize_rows_bf16", w, n0, n1);
#if LLI_QUANT_X86
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  if (avx512 && best_kernel() != Kernel::reference) {
    for (std::int64_t n = n0; n < n1; ++n) dequantize_row_bf16_avx512(w, n, out + (n - n0) * w.K);
    return;
  }
#endif
  thread_local std::vector<float> buf;
  buf.resize(static_cast<std::size_t>(w.K));
  for (std::int64_t n = n0; n < n1; ++n) {
    dequantize_row(w, n, buf.data());
    std::uint16_t* o = out + (n - n0) * w.K;
    for (std::int64_t k = 0; k < w.K; ++k) o[k] = st::f32_to_bf16(buf[k]);
  }
}

// ---- activations ----

void quantize_acts(const float* x, std::int64_t M, std::int64_t K, std::int64_t ldx, QActs* out) {
  acts_prepare(M, K, out);
  const std::int64_t G = K / kBlock;
  for (std::int64_t m = 0; m < M; ++m) {
    acts_row(x + m * ldx, K, out->q.data() + m * K, out->d.data() + m * G, out->sum.data() + m * G);
    acts_reorder(out, m);
  }
}

void quantize_acts_bf16(const std::uint16_t* x, std::int64_t M, std::int64_t K, std::int64_t ldx, QActs* out) {
  acts_prepare(M, K, out);
  const std::int64_t G = K / kBlock;
  for (std::int64_t m = 0; m < M; ++m) {
    acts_row(bf16_row(x + m * ldx, K, 0), K, out->q.data() + m * K, out->d.data() + m * G, out->sum.data() + m * G);
    acts_reorder(out, m);
  }
}

// ---- matmul ----

void matmul_rows(const QMatrix& w, const QActs& x, std::int64_t n0, std::int64_t n1, float* y, std::int64_t ldy,
                 Kernel k) {
  check_matrix("matmul_rows", w, n0, n1);
  if (x.K != w.K)
    throw RuntimeError("matmul_rows: the activations have K = " + std::to_string(x.K) + ", the " +
                       qtype_name(w.type) + " weight K = " + std::to_string(w.K));
  if (static_cast<std::int64_t>(x.q.size()) != x.M * x.K ||
      static_cast<std::int64_t>(x.d.size()) != x.M * (x.K / kBlock) || x.sum.size() != x.d.size())
    throw RuntimeError("matmul_rows: QActs arrays do not match M = " + std::to_string(x.M) +
                       ", K = " + std::to_string(x.K));
  if (k == Kernel::automatic) k = best_kernel();
  if (!kernel_supported(k))
    throw RuntimeError(std::string("matmul_rows: kernel ") + kernel_name(k) + " is not supported on this CPU");
  if (n1 == n0 || x.M == 0) return;
  const bool q8 = w.type == QType::q8_0;
  switch (k) {
#if LLI_QUANT_X86
    case Kernel::avx512_vnni:
      q8 ? run_rows<Q8Vnni>(w, x, n0, n1, y, ldy) : run_rows<Q4kVnni>(w, x, n0, n1, y, ldy);
      return;
    case Kernel::avx2:
      q8 ? run_rows<Q8Avx2>(w, x, n0, n1, y, ldy) : run_rows<Q4kAvx2>(w, x, n0, n1, y, ldy);
      return;
#endif
    default:
      q8 ? ref_q8_0(w, x, n0, n1, y, ldy) : ref_q4_k(w, x, n0, n1, y, ldy);
      return;
  }
}

}  // namespace lli::nn::quant
