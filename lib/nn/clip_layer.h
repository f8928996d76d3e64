// The CLIP encoder (pre-LN transformer blocks), shared by the CLIP vision tower (LLaVA, OWL) and
// the CLIP text encoder (Stable Diffusion, OWL; causal). Registered names follow transformers'
// CLIPEncoder state_dict: layers.N.{self_attn.{q,k,v,out}_proj, layer_norm1, mlp.fc1, mlp.fc2,
// layer_norm2}.
// Ref: transformers/models/clip/modeling_clip.py CLIPEncoder / CLIPEncoderLayer / CLIPAttention /
//      CLIPMLP (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "nn/activation.h"
#include "nn/layers.h"

namespace lli::nn {

// From this many tokens, bf16 self-attention runs the fused kernel (AttentionOptions::fused_long):
// OWLv2's 3,601-token vision tower 1.6x faster; LLaVA's 577 tokens stay on the eager path.
constexpr std::int64_t kCLIPFusedMinTokens = 1024;

struct CLIPLayerConfig {
  std::int64_t hidden_size = 768;
  std::int64_t intermediate_size = 3072;
  std::int64_t n_head = 12;
  double layer_norm_eps = 1e-5;
  Activation act = Activation::quick_gelu;
  bool causal = false;  // text encoder: each token sees itself and earlier tokens only
};

struct CLIPAttentionImpl : torch::nn::Module {
  explicit CLIPAttentionImpl(const CLIPLayerConfig& cfg);
  // x: [B, T, D]; mask: undefined or additive, broadcastable to [B, H, T, T] -> [B, T, D]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});

  std::int64_t n_head, head_dim;
  bool causal;
  Linear k_proj{nullptr}, v_proj{nullptr}, q_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(CLIPAttention);

struct CLIPMLPImpl : torch::nn::Module {
  explicit CLIPMLPImpl(const CLIPLayerConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x);  // x: [..., D]
  Activation act;
  Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(CLIPMLP);

struct CLIPEncoderLayerImpl : torch::nn::Module {
  explicit CLIPEncoderLayerImpl(const CLIPLayerConfig& cfg);
  // x: [B, T, D] -> [B, T, D]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});

  CLIPAttention self_attn{nullptr};
  LayerNorm layer_norm1{nullptr};
  CLIPMLP mlp{nullptr};
  LayerNorm layer_norm2{nullptr};
};
TORCH_MODULE(CLIPEncoderLayer);

// The `layers` ModuleList of n_layer encoder layers.
struct CLIPEncoderImpl : torch::nn::Module {
  CLIPEncoderImpl(const CLIPLayerConfig& cfg, std::int64_t n_layer);
  // Runs the first `n` layers (-1: all) on x: [B, T, D] with the additive `mask` (undefined or
  // broadcastable to [B, H, T, T]; the layers add the causal part themselves when configured so).
  // `each(i, h)` is called with the output of layer i (0-based). Returns the last output [B, T, D].
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask = {}, std::int64_t n = -1,
                        const std::function<void(std::int64_t, const torch::Tensor&)>& each = {});

  torch::nn::ModuleList layers{nullptr};  // of CLIPEncoderLayer
  std::vector<CLIPEncoderLayer> layer_list;
};
TORCH_MODULE(CLIPEncoder);

}  // namespace lli::nn
