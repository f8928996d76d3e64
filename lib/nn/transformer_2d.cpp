// Ref: diffusers/models/transformers/transformer_2d.py Transformer2DModel (_init_continuous_input,
// _operate_on_continuous_inputs, _get_output_for_continuous_inputs), attention.py
// BasicTransformerBlock (norm_type "layer_norm"), GatedSelfAttentionDense (v0.31).
#include "nn/transformer_2d.h"

#include <cmath>
#include <string>

#include "lli/error.h"
#include "nn/resnet_block.h"  // conv2d_options

namespace lli::nn {

namespace {
DiffusersAttentionConfig attention_config(std::int64_t query_dim, std::int64_t cross_dim, const Transformer2DConfig& c) {
  DiffusersAttentionConfig a;
  a.query_dim = query_dim;
  a.cross_attention_dim = cross_dim;
  a.heads = c.n_head;
  a.dim_head = c.head_dim;
  a.bias = false;  // attention_bias default
  a.out_bias = true;
  a.upcast_attention = c.upcast_attention;
  a.q_chunk = c.q_chunk;
  return a;
}
}  // namespace

GatedSelfAttentionDenseImpl::GatedSelfAttentionDenseImpl(std::int64_t query_dim, std::int64_t context_dim,
                                                         std::int64_t n_head, std::int64_t head_dim,
                                                         std::int64_t q_chunk) {
  linear = register_module("linear", Linear(context_dim, query_dim));
  DiffusersAttentionConfig a;
  a.query_dim = query_dim;
  a.heads = n_head;
  a.dim_head = head_dim;
  a.q_chunk = q_chunk;
  attn = register_module("attn", DiffusersAttention(a));
  ff = register_module("ff", FeedForward(query_dim, 4 * query_dim));
  norm1 = register_module("norm1", LayerNorm(query_dim, 1e-5));
  norm2 = register_module("norm2", LayerNorm(query_dim, 1e-5));
  alpha_attn = register_parameter("alpha_attn", placeholder({}), false);
  alpha_dense = register_parameter("alpha_dense", placeholder({}), false);
}

torch::Tensor GatedSelfAttentionDenseImpl::forward(const torch::Tensor& x, const torch::Tensor& objs, const Tap& tap,
                                                   std::int64_t grid_width) {
  const auto n_visual = x.size(1);
  auto o = linear(objs.to(x.scalar_type()));                   // [B, n_obj, D]
  auto h = layer_norm(norm1, torch::cat({x, o}, 1));          // [B, N + n_obj, D]
  if (tap) {
    const auto B = h.size(0), L = h.size(1), heads = attn->cfg.heads, dh = attn->cfg.dim_head;
    const auto scores = [&](const torch::Tensor& t) {  // [B, L, D] -> [B, heads, N, L]
      const auto q = attn->to_q(t.narrow(1, 0, n_visual)).view({B, n_visual, heads, dh}).transpose(1, 2);  // [B, heads, N, dh]
      const auto k = attn->to_k(t).view({B, L, heads, dh}).transpose(1, 2);                                // [B, heads, L, dh]
      return torch::matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(dh)));
    };
    tap("fuser.scores", grid_width, scores(h));
    // the same with the visual tokens detached: a loss on these trains the fuser's projections and
    // the grounding tokens, not the features the UNet computes
    tap("fuser.scores_fixed_features", grid_width,
        scores(torch::cat({h.narrow(1, 0, n_visual).detach(), h.narrow(1, n_visual, L - n_visual)}, 1)));
  }
  // Only the visual tokens' outputs are kept: their query rows alone are computed.
  auto a = attn(h, torch::Tensor(), /*n_query=*/n_visual);    // [B, N, D]
  auto y = x + torch::tanh(alpha_attn) * a;
  return y + torch::tanh(alpha_dense) * ff(layer_norm(norm2, y));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(const Transformer2DConfig& c)
    : only_cross_attention(c.only_cross_attention) {
  const auto dim = c.inner_dim();
  norm1 = register_module("norm1", LayerNorm(dim, c.norm_eps));
  attn1 = register_module("attn1", DiffusersAttention(attention_config(dim, c.only_cross_attention ? c.cross_attention_dim : 0, c)));
  norm2 = register_module("norm2", LayerNorm(dim, c.norm_eps));
  attn2 = register_module("attn2", DiffusersAttention(attention_config(dim, c.cross_attention_dim, c)));
  norm3 = register_module("norm3", LayerNorm(dim, c.norm_eps));
  ff = register_module("ff", FeedForward(dim, 4 * dim));
  if (c.gated) fuser = register_module("fuser", GatedSelfAttentionDense(dim, c.cross_attention_dim, c.n_head, c.head_dim, c.q_chunk));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context,
                                                 const torch::Tensor& objs, const Tap& tap, std::int64_t grid_width) {
  auto h = x + attn1(layer_norm(norm1, x), only_cross_attention ? context : torch::Tensor());
  if (objs.defined()) {
    if (!fuser) throw RuntimeError("GLIGEN grounding tokens given to a transformer block without a fuser");
    h = fuser(h, objs, tap, grid_width);
  }
  h = h + attn2(layer_norm(norm2, h), context);
  return h + ff(layer_norm(norm3, h));
}

Transformer2DModelImpl::Transformer2DModelImpl(const Transformer2DConfig& c) : cfg(c) {
  if (c.cross_attention_dim <= 0)
    throw ModelError("Transformer2DModel: cross_attention_dim must be positive, got " + std::to_string(c.cross_attention_dim));
  if (c.norm_num_groups <= 0 || c.in_channels % c.norm_num_groups != 0)
    throw ModelError("Transformer2DModel: in_channels " + std::to_string(c.in_channels) +
                     " is not divisible by norm_num_groups " + std::to_string(c.norm_num_groups));
  const auto inner = c.inner_dim();
  norm = register_module("norm", GroupNorm(c.norm_num_groups, c.in_channels, 1e-6));
  if (c.use_linear_projection) {
    proj_in_linear = register_module("proj_in", Linear(c.in_channels, inner));
  } else {
    proj_in_conv = register_module("proj_in", Conv2d(conv2d_options(c.in_channels, inner, 1)));
  }
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.n_layer; ++i) {
    blocks.push_back(BasicTransformerBlock(c));
    transformer_blocks->push_back(blocks.back());
  }
  if (c.use_linear_projection) {
    proj_out_linear = register_module("proj_out", Linear(inner, c.in_channels));
  } else {
    proj_out_conv = register_module("proj_out", Conv2d(conv2d_options(inner, c.in_channels, 1)));
  }
}

torch::Tensor Transformer2DModelImpl::forward(const torch::Tensor& x, const torch::Tensor& context,
                                              const torch::Tensor& objs, const Tap& tap) {
  const auto B = x.size(0), H = x.size(2), W = x.size(3);
  const auto inner = cfg.inner_dim();
  auto h = norm(x);  // [B, C, H, W]
  if (proj_in_conv) {
    // Token-major and contiguous: the blocks' LayerNorms, linears and residual adds then run on
    // unit-stride rows (a permuted view would send every one of them through a strided path).
    h = proj_in_conv(h).permute({0, 2, 3, 1}).reshape({B, H * W, inner}).contiguous();  // [B, HW, inner]
  } else {
    h = proj_in_linear(h.permute({0, 2, 3, 1}).reshape({B, H * W, x.size(1)}).contiguous());
  }
  const auto ctx = context.to(h.scalar_type());
  for (auto& blk : blocks) h = blk(h, ctx, objs, tap, W);
  if (proj_out_conv) {
    // Back in x's layout (a free view when x is channels-last).
    h = proj_out_conv(h.reshape({B, H, W, inner}).permute({0, 3, 1, 2}).contiguous(x.suggest_memory_format()));
  } else {
    h = proj_out_linear(h).reshape({B, H, W, x.size(1)}).permute({0, 3, 1, 2}).contiguous(x.suggest_memory_format());
  }
  return h + x;
}

}  // namespace lli::nn
