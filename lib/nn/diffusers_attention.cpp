// Ref: diffusers/models/attention_processor.py Attention, AttnProcessor (get_attention_scores:
// baddbmm(beta=0, alpha=scale), softmax, bmm); attention.py FeedForward; activations.py GEGLU (v0.31).
#include "nn/diffusers_attention.h"

#include <cmath>
#include <string>

#include "lli/error.h"
#include "nn/attention.h"

namespace lli::nn {

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
  auto hg = proj(x).chunk(2, -1);  // hidden, gate: [..., dim_out] each
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

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) { return out(geglu(x)); }

}  // namespace lli::nn
