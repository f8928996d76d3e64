// Ref: transformers/models/clip/modeling_clip.py CLIPEncoder / CLIPEncoderLayer (v4.45), eager attention.
#include "nn/clip_layer.h"

#include <cmath>
#include <string>

#include "lli/error.h"
#include "nn/attention.h"

namespace lli::nn {

CLIPAttentionImpl::CLIPAttentionImpl(const CLIPLayerConfig& cfg) : n_head(cfg.n_head), causal(cfg.causal) {
  if (cfg.n_head <= 0 || cfg.hidden_size % cfg.n_head != 0)
    throw ModelError("CLIP layer: hidden_size " + std::to_string(cfg.hidden_size) +
                     " is not divisible by num_attention_heads " + std::to_string(cfg.n_head));
  head_dim = cfg.hidden_size / cfg.n_head;
  const auto d = cfg.hidden_size;
  k_proj = register_module("k_proj", Linear(d, d));
  v_proj = register_module("v_proj", Linear(d, d));
  q_proj = register_module("q_proj", Linear(d, d));
  out_proj = register_module("out_proj", Linear(d, d));
}

torch::Tensor CLIPAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  const auto B = x.size(0), T = x.size(1), D = x.size(2);
  auto heads = [&](const torch::Tensor& t) {  // [B, T, D] -> [B, H, T, hd]
    return t.view({B, T, n_head, head_dim}).transpose(1, 2);
  };
  auto q = heads(q_proj(x));
  auto k = heads(k_proj(x));
  auto v = heads(v_proj(x));
  AttentionOptions opt;
  opt.scale_mode = AttentionScale::multiply_query;
  opt.scale = std::pow(static_cast<double>(head_dim), -0.5);
  opt.softmax_fp32 = false;
  opt.causal = causal;
  opt.fused_long = T >= kCLIPFusedMinTokens;
  auto o = attention(q, k, v, mask, opt);  // [B, H, T, hd]
  o = o.transpose(1, 2).reshape({B, T, D});
  return out_proj(o);
}

CLIPMLPImpl::CLIPMLPImpl(const CLIPLayerConfig& cfg) : act(cfg.act) {
  fc1 = register_module("fc1", Linear(cfg.hidden_size, cfg.intermediate_size));
  fc2 = register_module("fc2", Linear(cfg.intermediate_size, cfg.hidden_size));
}

torch::Tensor CLIPMLPImpl::forward(const torch::Tensor& x) { return fc2(apply_activation(fc1(x), act)); }

CLIPEncoderLayerImpl::CLIPEncoderLayerImpl(const CLIPLayerConfig& cfg) {
  self_attn = register_module("self_attn", CLIPAttention(cfg));
  layer_norm1 = register_module("layer_norm1", LayerNorm(cfg.hidden_size, cfg.layer_norm_eps));
  mlp = register_module("mlp", CLIPMLP(cfg));
  layer_norm2 = register_module("layer_norm2", LayerNorm(cfg.hidden_size, cfg.layer_norm_eps));
}

torch::Tensor CLIPEncoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  auto h = x + self_attn(layer_norm1(x), mask);
  return h + mlp(layer_norm2(h));
}

CLIPEncoderImpl::CLIPEncoderImpl(const CLIPLayerConfig& cfg, std::int64_t n_layer) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < n_layer; ++i) {
    layer_list.push_back(CLIPEncoderLayer(cfg));
    layers->push_back(layer_list.back());
  }
}

torch::Tensor CLIPEncoderImpl::forward(torch::Tensor x, const torch::Tensor& mask, std::int64_t n,
                                       const std::function<void(std::int64_t, const torch::Tensor&)>& each) {
  const auto total = static_cast<std::int64_t>(layer_list.size());
  if (n < 0) n = total;
  if (n > total)
    throw RuntimeError("CLIP encoder: " + std::to_string(n) + " layers requested, the model has " +
                       std::to_string(total));
  for (std::int64_t i = 0; i < n; ++i) {
    x = layer_list[static_cast<std::size_t>(i)]->forward(x, mask);
    if (each) each(i, x);
  }
  return x;
}

}  // namespace lli::nn
