// diffusers Transformer2DModel (continuous input) and BasicTransformerBlock, with GLIGEN's
// GatedSelfAttentionDense as the block's optional `fuser` (present for attention_type "gated").
// Registered names follow the diffusers state_dict: norm, proj_in, transformer_blocks.N.{norm1,
// attn1, fuser.{linear, attn, ff, norm1, norm2, alpha_attn, alpha_dense}, norm2, attn2, norm3,
// ff}, proj_out.
// Ref: diffusers/models/transformers/transformer_2d.py Transformer2DModel,
// attention.py BasicTransformerBlock, GatedSelfAttentionDense (v0.31).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "nn/diffusers_attention.h"
#include "nn/layers.h"
#include "nn/tap.h"

namespace lli::nn {

struct Transformer2DConfig {
  std::int64_t in_channels = 0;     // channels of the feature map
  std::int64_t n_head = 8;          // num_attention_heads
  std::int64_t head_dim = 40;       // attention_head_dim; inner_dim = n_head * head_dim
  std::int64_t n_layer = 1;         // transformer blocks
  std::int64_t cross_attention_dim = 0;  // width of encoder_hidden_states (and GLIGEN's objs)
  std::int64_t norm_num_groups = 32;     // the input GroupNorm (epsilon 1e-6)
  double norm_eps = 1e-5;                // the blocks' LayerNorms
  bool use_linear_projection = false;    // proj_in / proj_out as Linear instead of 1x1 Conv2d
  bool only_cross_attention = false;     // attn1 attends to encoder_hidden_states too
  bool upcast_attention = false;
  bool gated = false;                    // GLIGEN fuser in every block
  std::int64_t q_chunk = 0;              // attention query chunking (see DiffusersAttentionConfig)

  std::int64_t inner_dim() const { return n_head * head_dim; }
};

// x = x + tanh(alpha_attn) * attn(norm1(cat(x, linear(objs))))[:, :N]
// x = x + tanh(alpha_dense) * ff(norm2(x))
// Tap "fuser.scores" (index: the token grid's width): the attention logits of the visual queries
// over all keys, scale * q k^T per head, [B, heads, N, N + n_obj] (computed only when a tap is set;
// training reads them, e.g. to teach the fuser which box a token lies in), and
// "fuser.scores_fixed_features": the same computed from the visual tokens detached (a loss on them
// reaches the fuser's projections and the grounding tokens, not the UNet's features).
struct GatedSelfAttentionDenseImpl : torch::nn::Module {
  GatedSelfAttentionDenseImpl(std::int64_t query_dim, std::int64_t context_dim, std::int64_t n_head,
                              std::int64_t head_dim, std::int64_t q_chunk);
  // x: [B, N, query_dim]; objs: [B, n_obj, context_dim] -> [B, N, query_dim]; grid_width: the
  // token grid's width (only passed to the tap)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& objs, const Tap& tap = {},
                        std::int64_t grid_width = -1);

  Linear linear{nullptr};
  DiffusersAttention attn{nullptr};
  FeedForward ff{nullptr};
  LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::Tensor alpha_attn, alpha_dense;  // [] scalars
};
TORCH_MODULE(GatedSelfAttentionDense);

struct BasicTransformerBlockImpl : torch::nn::Module {
  explicit BasicTransformerBlockImpl(const Transformer2DConfig& cfg);
  // x: [B, N, D]; context: [B, L, cross_attention_dim]; objs: GLIGEN grounding tokens
  // [B, n_obj, cross_attention_dim] or undefined (fuser not applied) -> [B, N, D]; tap and
  // grid_width: the fuser's
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, const torch::Tensor& objs = {},
                        const Tap& tap = {}, std::int64_t grid_width = -1);

  LayerNorm norm1{nullptr};
  DiffusersAttention attn1{nullptr};
  LayerNorm norm2{nullptr};
  DiffusersAttention attn2{nullptr};
  LayerNorm norm3{nullptr};
  FeedForward ff{nullptr};
  GatedSelfAttentionDense fuser{nullptr};  // GLIGEN only
  bool only_cross_attention = false;
};
TORCH_MODULE(BasicTransformerBlock);

struct Transformer2DModelImpl : torch::nn::Module {
  explicit Transformer2DModelImpl(const Transformer2DConfig& cfg);
  // x: [B, C, H, W]; context: [B, L, cross_attention_dim]; objs as in BasicTransformerBlock
  // -> [B, C, H, W] (with the residual added). Taps: the fusers' "fuser.scores" (index W).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, const torch::Tensor& objs = {},
                        const Tap& tap = {});

  bool has_fuser() const { return cfg.gated; }

  Transformer2DConfig cfg;
  GroupNorm norm{nullptr};
  // Registered as proj_in / proj_out: 1x1 convolutions, or linears with use_linear_projection.
  Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr};
  std::vector<BasicTransformerBlock> blocks;
};
TORCH_MODULE(Transformer2DModel);

}  // namespace lli::nn
