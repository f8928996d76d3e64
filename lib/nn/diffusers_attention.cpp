// Ref: diffusers/models/attention_processor.py Attention, AttnProcessor (get_attention_scores:
// baddbmm(beta=0, alpha=scale), softmax, bmm); attention.py FeedForward; activations.py GEGLU (v0.31).
#include "nn/diffusers_attention.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cstring>

#include "lli/error.h"
#include "nn/attention.h"
#include "nn/linear_bf16.h"

#include "nn/bf16_simd.h"

#if LLI_HAVE_BF16_SIMD
#define LLI_HAVE_BF16_KERNEL 1
#define LLI_BF16_TARGET LLI_BF16_SIMD_TARGET
#else
#define LLI_HAVE_BF16_KERNEL 0
#endif

namespace lli::nn {


namespace {

#if LLI_HAVE_BF16_KERNEL
using simd::load16;
using simd::round16;
using simd::store16;
using simd::tail_mask;

// erf GELU 0.5 x (1 + erf(x / sqrt 2)); erf by Abramowitz-Stegun 7.1.26 (|error| <= 1.5e-7), the
// formula of libtorch's vectorized erf.
LLI_BF16_TARGET inline __m512 gelu16(__m512 x) {
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
  const __m512 az = _mm512_abs_ps(z);
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), az, _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  for (float c : {-1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f}) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c));
  p = _mm512_mul_ps(p, t);
  const __m512 e = simd::exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(az, az)));
  const __m512 erf_abs = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));                       // 1 - p e
  const __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(                                      // sign of z
      _mm512_castps_si512(erf_abs), _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(INT32_MIN))));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}

LLI_BF16_TARGET void layer_norm_rows(const std::uint16_t* x, std::int64_t ldx, const std::uint16_t* w,
                                     const std::uint16_t* b, float eps, std::int64_t C, std::uint16_t* y,
                                     std::int64_t r0, std::int64_t r1) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::uint16_t* xr = x + r * ldx;
    __m512 s = _mm512_setzero_ps();
    for (std::int64_t c = 0; c < C; c += 16) s = _mm512_add_ps(s, load16(xr + c, tail_mask(C - c)));
    const float mean = _mm512_reduce_add_ps(s) / static_cast<float>(C);
    const __m512 vm = _mm512_set1_ps(mean);
    __m512 q = _mm512_setzero_ps();
    for (std::int64_t c = 0; c < C; c += 16) {
      const __mmask16 m = tail_mask(C - c);
      const __m512 d = _mm512_maskz_sub_ps(m, load16(xr + c, m), vm);
      q = _mm512_fmadd_ps(d, d, q);
    }
    const float rstd = 1.0f / std::sqrt(_mm512_reduce_add_ps(q) / static_cast<float>(C) + eps);
    const __m512 vr = _mm512_set1_ps(rstd);
    std::uint16_t* yr = y + r * C;
    for (std::int64_t c = 0; c < C; c += 16) {
      const __mmask16 m = tail_mask(C - c);
      const __m512 n = _mm512_mul_ps(_mm512_sub_ps(load16(xr + c, m), vm), vr);
      store16(yr + c, _mm512_fmadd_ps(n, load16(w + c, m), load16(b + c, m)), m);
    }
  }
}

LLI_BF16_TARGET void geglu_rows(const std::uint16_t* u, std::int64_t ldu, std::int64_t F, std::uint16_t* y,
                                std::int64_t r0, std::int64_t r1) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::uint16_t* ur = u + r * ldu;
    std::uint16_t* yr = y + r * F;
    for (std::int64_t f = 0; f < F; f += 16) {
      const __mmask16 m = tail_mask(F - f);
      const __m512 g = round16(gelu16(load16(ur + F + f, m)));
      store16(yr + f, _mm512_mul_ps(load16(ur + f, m), g), m);
    }
  }
}
#endif  // LLI_HAVE_BF16_KERNEL

const std::uint16_t* bf16_data(const torch::Tensor& t) { return static_cast<const std::uint16_t*>(t.data_ptr()); }

}  // namespace

bool diffusers_bf16_kernels_applicable(const torch::Tensor& x) {
#if LLI_HAVE_BF16_KERNEL
  return bf16_kernels_available() && x.scalar_type() == torch::kBFloat16 && x.device().is_cpu() && x.dim() >= 1 &&
         x.stride(-1) == 1 && !x.requires_grad();
#else
  (void)x;
  return false;
#endif
}

torch::Tensor layer_norm_bf16(const torch::Tensor& x0, const torch::Tensor& w0, const torch::Tensor& b0, double eps) {
#if LLI_HAVE_BF16_KERNEL
  RECORD_FUNCTION("lli::layer_norm_bf16", std::vector<c10::IValue>());
  const auto C = x0.size(-1);
  auto x = x0.reshape({-1, C});  // a view when the rows are evenly strided
  if (x.stride(1) != 1) x = x.contiguous();
  auto w = w0.to(torch::kBFloat16).contiguous(), b = b0.to(torch::kBFloat16).contiguous();
  auto y = torch::empty({x.size(0), C}, x.options());
  const auto* xp = bf16_data(x);
  const auto ldx = x.stride(0);
  auto* yp = static_cast<std::uint16_t*>(y.data_ptr());
  at::parallel_for(0, x.size(0), 64, [&](std::int64_t r0, std::int64_t r1) {
    layer_norm_rows(xp, ldx, bf16_data(w), bf16_data(b), static_cast<float>(eps), C, yp, r0, r1);
  });
  return y.view(x0.sizes());
#else
  (void)w0, (void)b0, (void)eps;
  throw RuntimeError("layer_norm_bf16: not compiled for this architecture " + c10::str(x0.sizes()));
#endif
}

torch::Tensor geglu_bf16(const torch::Tensor& u0) {
#if LLI_HAVE_BF16_KERNEL
  RECORD_FUNCTION("lli::geglu_bf16", std::vector<c10::IValue>());
  const auto F = u0.size(-1) / 2;
  auto u = u0.reshape({-1, 2 * F});
  if (u.stride(1) != 1) u = u.contiguous();
  auto y = torch::empty({u.size(0), F}, u.options());
  const auto* up = bf16_data(u);
  const auto ldu = u.stride(0);
  auto* yp = static_cast<std::uint16_t*>(y.data_ptr());
  at::parallel_for(0, u.size(0), 16, [&](std::int64_t r0, std::int64_t r1) { geglu_rows(up, ldu, F, yp, r0, r1); });
  auto shape = u0.sizes().vec();
  shape.back() = F;
  return y.view(shape);
#else
  throw RuntimeError("geglu_bf16: not compiled for this architecture " + c10::str(u0.sizes()));
#endif
}

torch::Tensor layer_norm(LayerNorm& norm, const torch::Tensor& x) {
  if (norm->weight.defined() && norm->bias.defined() && diffusers_bf16_kernels_applicable(x))
    return layer_norm_bf16(x, norm->weight, norm->bias, norm->eps);
  return norm(x);
}

DiffusersAttentionImpl::DiffusersAttentionImpl(const DiffusersAttentionConfig& c) : cfg(c) {
  if (c.query_dim <= 0 || c.heads <= 0 || c.dim_head <= 0)
    throw ModelError("diffusers Attention: query_dim " + std::to_string(c.query_dim) + ", heads " +
                     std::to_string(c.heads) + ", dim_head " + std::to_string(c.dim_head) + " must be positive");
  const auto inner = c.inner_dim();
  const auto kv_dim = c.cross_attention_dim > 0 ? c.cross_attention_dim : c.query_dim;
  if (c.norm_num_groups > 0) {
    if (c.query_dim % c.norm_num_groups != 0)
      throw ModelError("diffusers Attention: query_dim " + std::to_string(c.query_dim) +
                       " is not divisible by norm_num_groups " + std::to_string(c.norm_num_groups));
    group_norm = register_module("group_norm", GroupNorm(c.norm_num_groups, c.query_dim, c.eps));
  }
  to_q = register_module("to_q", Linear(c.query_dim, inner, c.bias));
  to_k = register_module("to_k", Linear(kv_dim, inner, c.bias));
  to_v = register_module("to_v", Linear(kv_dim, inner, c.bias));
  to_out = register_module("to_out", torch::nn::ModuleList());
  out_proj = Linear(inner, c.query_dim, c.out_bias);
  to_out->push_back(out_proj);
}

torch::Tensor DiffusersAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context,
                                              std::int64_t n_query) {
  const bool spatial = x.dim() == 4;
  if (spatial && n_query > 0) throw RuntimeError("diffusers Attention: n_query needs a 3-D input");
  const auto B = x.size(0);
  torch::Tensor h = x;
  if (group_norm) h = group_norm(h);  // statistics per (sample, group) over channels and pixels
  std::int64_t C = 0, H = 0, W = 0;
  if (spatial) {
    C = x.size(1), H = x.size(2), W = x.size(3);
    h = h.flatten(2).transpose(1, 2);  // [B, HW, C]
  }
  const auto kv_in = context.defined() ? context : h;  // [B, Lk, Dk]
  const auto q_in = n_query > 0 ? h.narrow(1, 0, n_query) : h;
  const auto Lq = q_in.size(1), Lk = kv_in.size(1);
  const auto nh = cfg.heads, hd = cfg.dim_head;
  auto heads = [&](const torch::Tensor& t, std::int64_t L) {  // [B, L, nh * hd] -> [B, nh, L, hd]
    return t.view({B, L, nh, hd}).transpose(1, 2);
  };
  auto q = heads(to_q(q_in), Lq);
  auto k = heads(to_k(kv_in), Lk);
  auto v = heads(to_v(kv_in), Lk);
  const auto dtype = q.scalar_type();
  const bool upcast = cfg.upcast_attention && dtype != torch::kFloat32 && dtype != torch::kFloat64;
  if (upcast) q = q.to(torch::kFloat32), k = k.to(torch::kFloat32), v = v.to(torch::kFloat32);

  AttentionOptions opt;
  opt.scale_mode = AttentionScale::multiply_query;
  opt.scale = 1.0 / std::sqrt(static_cast<double>(hd));
  // bf16 on CPU: libtorch's bf16 softmax accumulates in fp32 and rounds once, exactly an fp32
  // softmax rounded to bf16, so asking for the fp32 softmax changes no value; it lets nn::attention
  // take the fused bf16 kernel (nn/attention_bf16.h) for many query rows.
  opt.softmax_fp32 = cfg.upcast_softmax || (dtype == torch::kBFloat16 && q.device().is_cpu());
  opt.q_chunk = cfg.q_chunk;
  auto o = attention(q, k, v, torch::Tensor(), opt);  // [B, nh, Lq, hd]
  if (upcast) o = o.to(dtype);
  o = out_proj(o.transpose(1, 2).reshape({B, Lq, nh * hd}));  // [B, Lq, query_dim]
  if (spatial) o = o.transpose(1, 2).reshape({B, C, H, W});
  if (cfg.residual_connection) o = o + (n_query > 0 ? x.narrow(1, 0, n_query) : x);
  if (cfg.rescale_output_factor != 1.0) o = o / cfg.rescale_output_factor;
  return o;
}

GEGLUImpl::GEGLUImpl(std::int64_t dim_in, std::int64_t dim_out) {
  proj = register_module("proj", Linear(dim_in, 2 * dim_out));
}

torch::Tensor GEGLUImpl::forward(const torch::Tensor& x) {
  auto u = proj(x);  // [..., 2 dim_out] = [hidden | gate]
  if (diffusers_bf16_kernels_applicable(u)) return geglu_bf16(u);
  auto hg = u.chunk(2, -1);
  return hg[0] * torch::gelu(hg[1]);
}

FeedForwardImpl::FeedForwardImpl(std::int64_t dim, std::int64_t inner_dim) {
  net = register_module("net", torch::nn::ModuleList());
  geglu = GEGLU(dim, inner_dim);
  out = Linear(inner_dim, dim);
  net->push_back(geglu);
  net->push_back(Identity());  // dropout
  net->push_back(out);
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  const auto D = x.size(-1);
  auto x2 = x.reshape({-1, D});
  const auto rows = x2.size(0);
  if (!diffusers_bf16_kernels_applicable(x) || rows <= kFeedForwardRows) return out(geglu(x));
  auto y = torch::empty({rows, out->weight.size(0)}, x.options());  // [rows, dim]
  for (std::int64_t r = 0; r < rows; r += kFeedForwardRows) {
    const auto n = std::min(kFeedForwardRows, rows - r);
    auto yr = y.narrow(0, r, n);
    auto g = geglu(x2.narrow(0, r, n));  // [n, inner]
    if (out->bias.defined())
      torch::addmm_out(yr, out->bias, g, out->weight.t());
    else
      torch::mm_out(yr, g, out->weight.t());
  }
  auto shape = x.sizes().vec();
  shape.back() = y.size(1);
  return y.view(shape);
}

}  // namespace lli::nn
