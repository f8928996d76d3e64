// Ref: torch.nn.functional.group_norm (ATen group_norm_kernel.cpp semantics: biased variance,
// rstd = 1 / sqrt(var + eps)); diffusers' ResnetBlock2D norm -> SiLU pairs.
#include "nn/group_norm_bf16.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cmath>
#include <string>
#include <vector>

#include "lli/error.h"
#include "nn/bf16_simd.h"
#include "nn/layers.h"
#include "nn/linear_bf16.h"

namespace lli::nn {

namespace {

#if LLI_HAVE_BF16_SIMD
using simd::load16;
using simd::store16;
using simd::tail_mask;

const std::uint16_t* bf16_ptr(const torch::Tensor& t) { return static_cast<const std::uint16_t*>(t.data_ptr()); }

// Sum of x (centred: sum of (x - mean)^2) over n contiguous bf16 values, fp32 lanes flushed into a
// double every 4096 values.
LLI_BF16_SIMD_TARGET double sum_block(const std::uint16_t* x, std::int64_t n, bool centred, float mean) {
  double total = 0;
  const __m512 vm = _mm512_set1_ps(mean);
  for (std::int64_t s = 0; s < n; s += 4096) {
    const std::int64_t e = std::min(n, s + 4096);
    __m512 acc = _mm512_setzero_ps();
    for (std::int64_t i = s; i < e; i += 16) {
      const __mmask16 m = tail_mask(e - i);
      const __m512 v = load16(x + i, m);
      if (centred) {
        const __m512 d = _mm512_maskz_sub_ps(m, v, vm);
        acc = _mm512_fmadd_ps(d, d, acc);
      } else {
        acc = _mm512_add_ps(acc, v);
      }
    }
    total += _mm512_reduce_add_ps(acc);
  }
  return total;
}

// y[i] = bf16(x[i] * a + c) (then bf16(silu(.))) over n contiguous values (one channel, NCHW).
LLI_BF16_SIMD_TARGET void affine_run(const std::uint16_t* x, std::int64_t n, float a, float c, bool silu,
                                     std::uint16_t* y) {
  const __m512 va = _mm512_set1_ps(a), vc = _mm512_set1_ps(c);
  for (std::int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    __m512 v = _mm512_fmadd_ps(load16(x + i, m), va, vc);
    if (silu) v = simd::silu16(simd::round16(v));
    store16(y + i, v, m);
  }
}

// Per-channel sums over rows [r0, r1) of an [rows, C] channels-last block (centred: of (x - m[c])^2).
LLI_BF16_SIMD_TARGET void channel_sums(const std::uint16_t* x, std::int64_t C, std::int64_t r0, std::int64_t r1,
                                       const float* m, double* out) {
  std::vector<float> acc(static_cast<std::size_t>(C));
  for (std::int64_t s = r0; s < r1; s += 256) {
    const std::int64_t e = std::min(r1, s + 256);
    std::fill(acc.begin(), acc.end(), 0.f);
    for (std::int64_t r = s; r < e; ++r) {
      const std::uint16_t* xr = x + r * C;
      for (std::int64_t c = 0; c < C; c += 16) {
        const __mmask16 k = tail_mask(C - c);
        __m512 v = load16(xr + c, k);
        __m512 a = _mm512_maskz_loadu_ps(k, acc.data() + c);
        if (m) {
          v = _mm512_maskz_sub_ps(k, v, _mm512_maskz_loadu_ps(k, m + c));
          a = _mm512_fmadd_ps(v, v, a);
        } else {
          a = _mm512_add_ps(a, v);
        }
        _mm512_mask_storeu_ps(acc.data() + c, k, a);
      }
    }
    for (std::int64_t c = 0; c < C; ++c) out[c] += acc[static_cast<std::size_t>(c)];
  }
}

// y[r, c] = bf16(x[r, c] * a[c] + k[c]) (then bf16(silu(.))) for rows [r0, r1) of [rows, C].
LLI_BF16_SIMD_TARGET void affine_rows(const std::uint16_t* x, std::int64_t C, std::int64_t r0, std::int64_t r1,
                                      const float* a, const float* k, bool silu, std::uint16_t* y) {
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t c = 0; c < C; c += 16) {
      const __mmask16 m = tail_mask(C - c);
      __m512 v = _mm512_fmadd_ps(load16(x + r * C + c, m), _mm512_maskz_loadu_ps(m, a + c), _mm512_maskz_loadu_ps(m, k + c));
      if (silu) v = simd::silu16(simd::round16(v));
      store16(y + r * C + c, v, m);
    }
}
#endif  // LLI_HAVE_BF16_SIMD

std::vector<float> channel_param(const torch::Tensor& p, std::int64_t C, float fill) {
  if (!p.defined()) return std::vector<float>(static_cast<std::size_t>(C), fill);
  auto f = p.to(torch::kCPU, torch::kFloat32).contiguous();
  const float* d = f.data_ptr<float>();
  return std::vector<float>(d, d + C);
}

}  // namespace

bool group_norm_bf16_applicable(const torch::Tensor& x, std::int64_t groups) {
#if LLI_HAVE_BF16_SIMD
  if (!bf16_kernels_available() || x.scalar_type() != torch::kBFloat16 || !x.device().is_cpu() || x.dim() < 3 ||
      x.requires_grad() || groups <= 0 || x.size(1) % groups != 0 || x.numel() == 0)
    return false;
  return x.is_contiguous() || (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast));
#else
  (void)x, (void)groups;
  return false;
#endif
}

torch::Tensor group_norm_bf16(const torch::Tensor& x, std::int64_t groups, const torch::Tensor& w,
                              const torch::Tensor& b, double eps, bool silu) {
#if LLI_HAVE_BF16_SIMD
  RECORD_FUNCTION("lli::group_norm_bf16", std::vector<c10::IValue>());
  if (!group_norm_bf16_applicable(x, groups))
    throw RuntimeError("group_norm_bf16: unsupported input (bf16 CPU, contiguous or channels-last, C % groups == 0)");
  const std::int64_t N = x.size(0), C = x.size(1), Cg = C / groups, HW = x.numel() / (N * C);
  const auto wv = channel_param(w, C, 1.f), bv = channel_param(b, C, 0.f);
  const double count = static_cast<double>(Cg * HW);
  const auto* xp = bf16_ptr(x);
  if (x.is_contiguous()) {
    auto y = torch::empty_like(x);
    auto* yp = static_cast<std::uint16_t*>(y.data_ptr());
    // One task per (sample, group): its Cg * HW values are contiguous.
    at::parallel_for(0, N * groups, 1, [&](std::int64_t t0, std::int64_t t1) {
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::uint16_t* xg = xp + t * Cg * HW;
        const double mean = sum_block(xg, Cg * HW, false, 0.f) / count;
        const double var = sum_block(xg, Cg * HW, true, static_cast<float>(mean)) / count;
        const double rstd = 1.0 / std::sqrt(var + eps);
        const std::int64_t c0 = (t % groups) * Cg;
        for (std::int64_t c = 0; c < Cg; ++c) {
          const double a = rstd * wv[static_cast<std::size_t>(c0 + c)];
          const double k = bv[static_cast<std::size_t>(c0 + c)] - mean * a;
          affine_run(xg + c * HW, HW, static_cast<float>(a), static_cast<float>(k), silu, yp + (t * Cg + c) * HW);
        }
      }
    });
    return y;
  }
  // Channels-last: [N, HW, C] in memory. Per sample: per-channel sums in row blocks (one per
  // thread), reduced to groups; then one affine pass with per-channel scale and shift.
  auto y = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
  auto* yp = static_cast<std::uint16_t*>(y.data_ptr());
  const int nt = std::max(1, at::get_num_threads());
  const std::int64_t block = (HW + nt - 1) / nt;
  std::vector<double> partial(static_cast<std::size_t>(nt * C));
  std::vector<float> mean_c(static_cast<std::size_t>(C)), a(static_cast<std::size_t>(C)), k(static_cast<std::size_t>(C));
  auto group_reduce = [&](std::vector<double>& g) {  // partial[thread][c] -> g[group]
    std::fill(g.begin(), g.end(), 0.0);
    for (int th = 0; th < nt; ++th)
      for (std::int64_t c = 0; c < C; ++c) g[static_cast<std::size_t>(c / Cg)] += partial[static_cast<std::size_t>(th * C + c)];
  };
  std::vector<double> gsum(static_cast<std::size_t>(groups)), gmean(static_cast<std::size_t>(groups));
  for (std::int64_t n = 0; n < N; ++n) {
    const std::uint16_t* xn = xp + n * HW * C;
    for (int pass = 0; pass < 2; ++pass) {
      std::fill(partial.begin(), partial.end(), 0.0);
      at::parallel_for(0, nt, 1, [&](std::int64_t t0, std::int64_t t1) {
        for (std::int64_t th = t0; th < t1; ++th) {
          const std::int64_t r0 = th * block, r1 = std::min(HW, r0 + block);
          if (r0 < r1) channel_sums(xn, C, r0, r1, pass ? mean_c.data() : nullptr, partial.data() + th * C);
        }
      });
      group_reduce(gsum);
      if (pass == 0) {
        for (std::int64_t g = 0; g < groups; ++g) gmean[static_cast<std::size_t>(g)] = gsum[static_cast<std::size_t>(g)] / count;
        for (std::int64_t c = 0; c < C; ++c) mean_c[static_cast<std::size_t>(c)] = static_cast<float>(gmean[static_cast<std::size_t>(c / Cg)]);
      }
    }
    for (std::int64_t c = 0; c < C; ++c) {
      const auto g = static_cast<std::size_t>(c / Cg);
      const double rstd = 1.0 / std::sqrt(gsum[g] / count + eps);
      const double ac = rstd * wv[static_cast<std::size_t>(c)];
      a[static_cast<std::size_t>(c)] = static_cast<float>(ac);
      k[static_cast<std::size_t>(c)] = static_cast<float>(bv[static_cast<std::size_t>(c)] - gmean[g] * ac);
    }
    at::parallel_for(0, HW, 64, [&](std::int64_t r0, std::int64_t r1) {
      affine_rows(xn, C, r0, r1, a.data(), k.data(), silu, yp + n * HW * C);
    });
  }
  return y;
#else
  (void)w, (void)b, (void)eps, (void)silu;
  throw RuntimeError("group_norm_bf16: not compiled for this architecture (groups " + std::to_string(groups) + ", " +
                     std::to_string(x.dim()) + "-D input)");
#endif
}

torch::Tensor prefer_channels_last(const torch::Tensor& x) {
  if (x.dim() == 4 && x.scalar_type() == torch::kBFloat16 && x.device().is_cpu() && bf16_kernels_available())
    return x.contiguous(at::MemoryFormat::ChannelsLast);
  return x;
}

void convs_to_channels_last(torch::nn::Module& module, torch::Dtype dtype, const torch::Device& device) {
  if (dtype != torch::kBFloat16 || !device.is_cpu() || !bf16_kernels_available()) return;
  torch::NoGradGuard ng;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    auto* conv = dynamic_cast<Conv2dImpl*>(m.get());
    if (!conv || !conv->weight.defined() || conv->weight.dim() != 4) continue;
    conv->weight.set_data(conv->weight.contiguous(at::MemoryFormat::ChannelsLast));
  }
}

}  // namespace lli::nn
