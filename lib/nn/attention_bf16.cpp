// Ref: transformers LlamaAttention / CLIPAttention eager paths (v4.45); see attention_bf16.h.
#include "nn/attention_bf16.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "lli/error.h"
#include "nn/linear_bf16.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// GCC 12 reports its own intrinsics' _mm512_undefined_* operands as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define LLI_HAVE_BF16_KERNEL 1
#else
#define LLI_HAVE_BF16_KERNEL 0
#endif

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

#define LLI_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

LLI_BF16_TARGET inline float hsum(__m512 v) {
  alignas(64) float l[16];
  _mm512_store_ps(l, v);
  return ((l[0] + l[8]) + (l[4] + l[12])) + ((l[2] + l[10]) + (l[6] + l[14])) +
         (((l[1] + l[9]) + (l[5] + l[13])) + ((l[3] + l[11]) + (l[7] + l[15])));
}

// bf16 x 16 -> fp32 x 16 (exact).
LLI_BF16_TARGET inline __m512 load_bf16x16(const std::uint16_t* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

struct Strides {
  std::int64_t b, h, l;  // elements; the last dim has stride 1
};

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
  for (std::int64_t j = 0; j < n; ++j) {
    const std::uint16_t* kr = kh + j * k_l;
    __m512 acc = _mm512_setzero_ps();
    for (std::int64_t c = 0; c < nq; ++c)
      acc = _mm512_dpbf16_ps(acc, (__m512bh)qv[c], (__m512bh)_mm512_maskz_loadu_epi16(qm[c], kr + 32 * c));
    float s = round_bf16(hsum(acc));             // matmul output in bf16
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
  for (std::int64_t j = 0; j < n; ++j) {
    const __m512 p = _mm512_set1_ps(round_bf16(scores[j] * inv));  // probabilities in bf16
    const std::uint16_t* vr = vh + j * v_l;
    for (std::int64_t c = 0; c < nv; ++c) acc[c] = _mm512_fmadd_ps(p, load_bf16x16(vr + 16 * c, vm[c]), acc[c]);
  }
  alignas(64) float o[256];
  for (std::int64_t c = 0; c < nv; ++c) _mm512_store_ps(o + 16 * c, acc[c]);
  for (std::int64_t d = 0; d < D; ++d) out[d] = bf16_bits(round_bf16(o[d]));
}

#endif  // LLI_HAVE_BF16_KERNEL

}  // namespace

bool attention_bf16_applicable(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& mask, const AttentionOptions& opt) {
#if LLI_HAVE_BF16_KERNEL
  if (!bf16_kernels_available() || mask.defined() || opt.rel_h.defined() || opt.rel_w.defined()) return false;
  for (const auto* t : {&q, &k, &v})
    if (t->scalar_type() != torch::kBFloat16 || !t->device().is_cpu() || t->dim() != 4 || t->stride(3) != 1 ||
        t->requires_grad())
      return false;
  const auto D = q.size(3);
  if (D < 1 || D > 256 || k.size(3) != D || v.size(3) != D) return false;
  if (q.size(2) < 1 || q.size(2) > kAttentionBF16MaxQueries) return false;
  if (k.size(0) != q.size(0) || v.size(0) != q.size(0) || v.size(1) != k.size(1) || v.size(2) != k.size(2))
    return false;
  if (k.size(1) < 1 || q.size(1) % k.size(1) != 0 || k.size(2) < 1) return false;
  return true;
#else
  return false;
#endif
}

torch::Tensor attention_bf16(const torch::Tensor& q0, const torch::Tensor& k, const torch::Tensor& v,
                             const AttentionOptions& opt) {
#if LLI_HAVE_BF16_KERNEL
  if (!attention_bf16_applicable(q0, k, v, {}, opt))
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
  // One task per (b, h); each runs its Lq query rows.
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
