// Ref: transformers/models/llama/modeling_llama.py (v4.45); see decoder_ops_bf16.h.
#include "nn/decoder_ops_bf16.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "lli/error.h"
#include "nn/bf16_simd.h"
#include "nn/linear_bf16.h"

namespace lli::nn {

namespace {

// Rows per parallel task so that a task handles at least ~32 K elements: one decoding row runs
// inline on the calling thread (no thread-pool round), a prefill's rows are split.
std::int64_t row_grain(std::int64_t width) { return std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(1, width)); }

const std::uint16_t* cbits(const torch::Tensor& t) { return static_cast<const std::uint16_t*>(t.data_ptr()); }
std::uint16_t* bits(torch::Tensor& t) { return static_cast<std::uint16_t*>(t.data_ptr()); }

void check(bool ok, const char* what) {
  if (!ok) throw RuntimeError(std::string(what) + ": unsupported operands (expected contiguous bf16 CPU tensors of matching shapes)");
}

// libtorch 1.13's sum of a contiguous fp32 row (aten/src/ATen/native/cpu/SumKernel.cpp,
// cascade_sum's contiguous inner reduction), which x.pow(2).mean(-1) runs: the row is read as
// vectors of `lanes` floats (Vectorized<float>: 8 with AVX2 kernels, 16 with AVX-512), four vector
// accumulators side by side (row_sum's ilp factor), added in a cascade of 4 levels whose step
// grows with the row (multi_row_sum); then the remaining vectors, the four accumulators, the
// scalar tail and the lanes, in that order. Reproducing the order keeps RMSNorm bit-identical to
// the eager op (a different order flips rare bf16 roundings, and greedy decoding then drifts).
// lanes = 1 is the scalar path torch takes for rows shorter than a vector.
template <int W>
float torch_row_sum_w(const float* v, std::int64_t n) {
  constexpr int kLevels = 4, kIlp = 4;
  const std::int64_t nvec = n / W;
  const std::int64_t size = nvec / kIlp;  // rows of kIlp vectors
  std::int64_t ceil_log2 = 1;
  if (size > 2) {
    ceil_log2 = 0;
    for (std::uint64_t x = static_cast<std::uint64_t>(size) - 1; x; x >>= 1) ++ceil_log2;
  }
  const std::int64_t level_power = std::max<std::int64_t>(4, ceil_log2 / kLevels);
  const std::int64_t level_step = std::int64_t{1} << level_power, level_mask = level_step - 1;
  float acc[kLevels][kIlp][W] = {};
  auto add_row = [&](std::int64_t i) {
    const float* b = v + i * kIlp * W;
    for (int k = 0; k < kIlp; ++k)
      for (int l = 0; l < W; ++l) acc[0][k][l] += b[k * W + l];
  };
  std::int64_t i = 0;
  while (i + level_step <= size) {
    for (std::int64_t j = 0; j < level_step; ++j, ++i) add_row(i);
    for (int j = 1; j < kLevels; ++j) {
      for (int k = 0; k < kIlp; ++k)
        for (int l = 0; l < W; ++l) {
          acc[j][k][l] += acc[j - 1][k][l];
          acc[j - 1][k][l] = 0.0f;
        }
      if ((i & (level_mask << (j * level_power))) != 0) break;
    }
  }
  for (; i < size; ++i) add_row(i);
  for (int j = 1; j < kLevels; ++j)
    for (int k = 0; k < kIlp; ++k)
      for (int l = 0; l < W; ++l) acc[0][k][l] += acc[j][k][l];
  for (std::int64_t t = size * kIlp; t < nvec; ++t)
    for (int l = 0; l < W; ++l) acc[0][0][l] += v[t * W + l];
  for (int k = 1; k < kIlp; ++k)
    for (int l = 0; l < W; ++l) acc[0][0][l] += acc[0][k][l];
  float total = 0.0f;
  for (std::int64_t t = nvec * W; t < n; ++t) total += v[t];
  for (int l = 0; l < W; ++l) total += acc[0][0][l];
  return total;
}

float torch_row_sum(const float* v, std::int64_t n, int lanes) {
  if (n < lanes) return torch_row_sum_w<1>(v, n);
  return lanes == 16 ? torch_row_sum_w<16>(v, n) : torch_row_sum_w<8>(v, n);
}

// The vector width libtorch's sum kernel runs with in this process (its CPU capability is not
// exported): the one whose order reproduces torch::sum on a few rows bit for bit; 0 when neither
// does (another libtorch), and RMSNorm then stays on the eager ops.
int torch_sum_lanes() {
  static const int lanes = [] {
    torch::NoGradGuard ng;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
    for (int w : {8, 16}) {
      bool all = true;
      for (std::int64_t n : {5, 33, 100, 2048, 4104, 5000, 11008}) {
        auto x = at::randn({n}, gen, torch::kFloat32).pow(2);
        const float ref = x.sum().item<float>();
        if (torch_row_sum(x.data_ptr<float>(), n, w) != ref) {
          all = false;
          break;
        }
      }
      if (all) return w;
    }
    return 0;
  }();
  return lanes;
}
constexpr std::int64_t kMaxNormWidth = 32768;  // beyond, torch may split one row's sum over threads

#if LLI_HAVE_BF16_SIMD
using namespace simd;

// One row: out = w * bf16(h * rsqrt(mean(h^2) + eps)); h is read from `h` (already bf16). The sum
// of squares is added in libtorch's order (torch_row_sum) with lanes = torch_sum_lanes().
LLI_BF16_SIMD_TARGET void rms_row(const std::uint16_t* h, const std::uint16_t* w, std::int64_t D, float eps, int lanes,
                                  float* sq, std::uint16_t* out) {
  for (std::int64_t i = 0; i < D; i += 16) {
    const __mmask16 m = tail_mask(D - i);
    const __m512 a = load16(h + i, m);
    _mm512_mask_storeu_ps(sq + i, m, _mm512_mul_ps(a, a));  // h.pow(2): one rounding (no fma: -ffp-contract=off)
  }
  const float mean = torch_row_sum(sq, D, lanes) / static_cast<float>(D);
  const __m512 r = _mm512_set1_ps(1.0f / std::sqrt(mean + eps));
  for (std::int64_t i = 0; i < D; i += 16) {
    const __mmask16 m = tail_mask(D - i);
    store16(out + i, _mm512_mul_ps(load16(w + i, m), round16(_mm512_mul_ps(load16(h + i, m), r))), m);
  }
}

// h = bf16(x + d) for one row.
LLI_BF16_SIMD_TARGET void add_row(const std::uint16_t* x, const std::uint16_t* d, std::int64_t D, std::uint16_t* h) {
  for (std::int64_t i = 0; i < D; i += 16) {
    const __mmask16 m = tail_mask(D - i);
    store16(h + i, _mm512_add_ps(load16(x + i, m), load16(d + i, m)), m);
  }
}

// One head vector of hd = 2 * half values, in place.
LLI_BF16_SIMD_TARGET void rotary_head(std::uint16_t* x, const std::uint16_t* c, const std::uint16_t* s,
                                      std::int64_t half) {
  for (std::int64_t i = 0; i < half; i += 16) {
    const __mmask16 m = tail_mask(half - i);
    const __m512 x1 = load16(x + i, m), x2 = load16(x + half + i, m);
    const __m512 c1 = load16(c + i, m), c2 = load16(c + half + i, m);
    const __m512 s1 = load16(s + i, m), s2 = load16(s + half + i, m);
    // first half: x1 * c - x2 * s; second half: x2 * c + x1 * s (each product rounded).
    const __m512 lo = _mm512_sub_ps(round16(_mm512_mul_ps(x1, c1)), round16(_mm512_mul_ps(x2, s1)));
    const __m512 hi = _mm512_add_ps(round16(_mm512_mul_ps(x2, c2)), round16(_mm512_mul_ps(x1, s2)));
    store16(x + i, lo, m);
    store16(x + half + i, hi, m);
  }
}

LLI_BF16_SIMD_TARGET void silu_mul_row(const std::uint16_t* g, const std::uint16_t* u, std::int64_t F,
                                       std::uint16_t* out) {
  for (std::int64_t i = 0; i < F; i += 16) {
    const __mmask16 m = tail_mask(F - i);
    // libtorch 1.13's bf16 silu rounds after every vector op: bf16(x / bf16(1 + bf16(e^-x))).
    const __m512 x = load16(g + i, m);
    const __m512 e = round16(exp16(_mm512_sub_ps(_mm512_setzero_ps(), x)));
    const __m512 s = round16(_mm512_div_ps(x, round16(_mm512_add_ps(_mm512_set1_ps(1.0f), e))));
    store16(out + i, _mm512_mul_ps(s, load16(u + i, m)), m);
  }
}
#endif

bool same_shape(const torch::Tensor& a, const torch::Tensor& b) { return a.sizes() == b.sizes(); }

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> on{[] {
    const char* e = std::getenv("LLI_FUSED_DECODER");
    return !(e && std::string(e) == "0");
  }()};
  return on;
}

}  // namespace

bool decoder_ops_bf16_applicable(std::initializer_list<const torch::Tensor*> ts) {
#if LLI_HAVE_BF16_SIMD
  if (!bf16_kernels_available() || !enabled_flag().load(std::memory_order_relaxed)) return false;
  for (const auto* t : ts)
    if (!t->defined() || t->scalar_type() != torch::kBFloat16 || !t->device().is_cpu() || !t->is_contiguous() ||
        t->dim() == 0)
      return false;
  return true;
#else
  (void)ts;
  return false;
#endif
}

void set_decoder_ops_enabled(bool enabled) { enabled_flag().store(enabled, std::memory_order_relaxed); }

bool rms_norm_bf16_applicable(const torch::Tensor& x, const torch::Tensor& w) {
  if (!decoder_ops_bf16_applicable({&x, &w})) return false;
  const std::int64_t D = x.size(-1);
  return D > 0 && D <= kMaxNormWidth && w.numel() == D && torch_sum_lanes() != 0;
}

#if LLI_HAVE_BF16_SIMD
// rms_row over `rows` rows of x [rows, D]; with `delta`, each row is first h = bf16(x + delta)
// (written to h) and h is normalised.
static void rms_rows(const std::uint16_t* x, const std::uint16_t* delta, const std::uint16_t* w, std::int64_t rows,
                     std::int64_t D, double eps, std::uint16_t* h, std::uint16_t* out) {
  const int lanes = torch_sum_lanes();
  at::parallel_for(0, rows, row_grain(D), [&](std::int64_t r0, std::int64_t r1) {
    std::vector<float> sq(static_cast<std::size_t>(D));
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::uint16_t* src = x + r * D;
      if (delta) {
        add_row(src, delta + r * D, D, h + r * D);
        src = h + r * D;
      }
      rms_row(src, w, D, static_cast<float>(eps), lanes, sq.data(), out + r * D);
    }
  });
}
#endif

torch::Tensor rms_norm_bf16(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  const std::int64_t D = x.size(-1);
  check(rms_norm_bf16_applicable(x, w), "rms_norm_bf16");
  auto out = torch::empty_like(x);  // [..., D]
#if LLI_HAVE_BF16_SIMD
  rms_rows(cbits(x), nullptr, cbits(w), x.numel() / D, D, eps, nullptr, bits(out));
#endif
  return out;
}

std::pair<torch::Tensor, torch::Tensor> add_rms_norm_bf16(const torch::Tensor& x, const torch::Tensor& delta,
                                                         const torch::Tensor& w, double eps) {
  const std::int64_t D = x.size(-1);
  check(rms_norm_bf16_applicable(x, w) && decoder_ops_bf16_applicable({&delta}) && same_shape(x, delta),
        "add_rms_norm_bf16");
  auto h = torch::empty_like(x);    // [..., D]
  auto out = torch::empty_like(x);  // [..., D]
#if LLI_HAVE_BF16_SIMD
  rms_rows(cbits(x), cbits(delta), cbits(w), x.numel() / D, D, eps, bits(h), bits(out));
#endif
  return {h, out};
}

void rotary_bf16_(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  check(decoder_ops_bf16_applicable({&x, &cos, &sin}) && x.dim() == 4 && cos.dim() == 2 && same_shape(cos, sin) &&
            cos.size(0) == x.size(1) && cos.size(1) == x.size(3) && x.size(3) % 2 == 0,
        "rotary_bf16_");
#if LLI_HAVE_BF16_SIMD
  const std::int64_t B = x.size(0), L = x.size(1), H = x.size(2), hd = x.size(3);
  auto* xp = bits(x);
  const auto* cp = cbits(cos);
  const auto* sp = cbits(sin);
  at::parallel_for(0, B * L, row_grain(H * hd), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int64_t l = r % L;
      for (std::int64_t h = 0; h < H; ++h) rotary_head(xp + (r * H + h) * hd, cp + l * hd, sp + l * hd, hd / 2);
    }
  });
#endif
}

torch::Tensor silu_mul_bf16(const torch::Tensor& gate, const torch::Tensor& up) {
  check(decoder_ops_bf16_applicable({&gate, &up}) && same_shape(gate, up), "silu_mul_bf16");
  auto out = torch::empty_like(gate);  // [..., F]
#if LLI_HAVE_BF16_SIMD
  const std::int64_t F = gate.size(-1);
  const auto* gp = cbits(gate);
  const auto* upp = cbits(up);
  auto* op = bits(out);
  at::parallel_for(0, gate.numel() / F, row_grain(F), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) silu_mul_row(gp + r * F, upp + r * F, F, op + r * F);
  });
#endif
  return out;
}

}  // namespace lli::nn
