// Ref: transformers/models/clip/modeling_clip.py CLIPVisionModel (v4.45), eager attention.
#include "models/clip_vision.h"
#include "nn/grad_mode.h"

#include <string>

#include "lli/error.h"

namespace lli::models {

CLIPVisionConfig parse_clip_vision_config(const ConfigReader& r, const CLIPVisionConfig& base) {
  CLIPVisionConfig c = base;
  parse_clip_encoder_config(r, c);
  c.num_channels = r.get_int("num_channels", c.num_channels);
  c.image_size = r.get_int("image_size", c.image_size);
  c.patch_size = r.get_int("patch_size", c.patch_size);
  r.require_positive("num_channels", c.num_channels);
  r.require_positive("image_size", c.image_size);
  r.require_positive("patch_size", c.patch_size);
  if (c.image_size % c.patch_size != 0)
    throw ModelError(r.where("image_size") + ": " + std::to_string(c.image_size) +
                     " is not a multiple of patch_size " + std::to_string(c.patch_size));
  return c;
}

CLIPVisionEmbeddingsImpl::CLIPVisionEmbeddingsImpl(const CLIPVisionConfig& c) : cfg(c) {
  class_embedding = register_parameter("class_embedding", nn::placeholder({c.hidden_size}), false);
  nn::Conv2dOptions o;
  o.in = c.num_channels;
  o.out = c.hidden_size;
  o.kernel = c.patch_size;
  o.stride = c.patch_size;
  o.bias = false;
  patch_embedding = register_module("patch_embedding", nn::Conv2d(o));
  position_embedding = register_module("position_embedding", nn::Embedding(c.num_positions(), c.hidden_size));
}

torch::Tensor CLIPVisionEmbeddingsImpl::forward(const torch::Tensor& pixel_values) {
  if (pixel_values.dim() != 4 || pixel_values.size(1) != cfg.num_channels ||
      pixel_values.size(2) != cfg.image_size || pixel_values.size(3) != cfg.image_size)
    throw InputError("CLIP vision tower: pixel_values have shape " + c10::str(pixel_values.sizes()) +
                     " but the model expects [B, " + std::to_string(cfg.num_channels) + ", " +
                     std::to_string(cfg.image_size) + ", " + std::to_string(cfg.image_size) + "]");
  const auto B = pixel_values.size(0);
  auto w = patch_embedding->weight;
  auto x = pixel_values.to(w.device(), w.scalar_type());
  auto patches = patch_embedding(x);                   // [B, D, S/p, S/p]
  patches = patches.flatten(2).transpose(1, 2);        // [B, P, D]
  auto cls = class_embedding.expand({B, 1, -1});       // [B, 1, D]
  auto emb = torch::cat({cls, patches}, 1);            // [B, 1 + P, D]
  return emb + position_embedding->weight.unsqueeze(0);  // position_ids = arange(1 + P)
}

CLIPVisionTransformerImpl::CLIPVisionTransformerImpl(const CLIPVisionConfig& c) : cfg(c) {
  embeddings = register_module("embeddings", CLIPVisionEmbeddings(cfg));
  pre_layrnorm = register_module(cfg.pre_layernorm_key, nn::LayerNorm(cfg.hidden_size, cfg.layer_norm_eps));
  encoder = register_module("encoder", nn::CLIPEncoder(cfg.layer_config(), cfg.num_hidden_layers));
  post_layernorm = register_module("post_layernorm", nn::LayerNorm(cfg.hidden_size, cfg.layer_norm_eps));
}

CLIPVisionModelImpl::CLIPVisionModelImpl(const CLIPVisionConfig& c) : cfg(c) {
  vision_model = register_module("vision_model", CLIPVisionTransformer(c));
}

std::vector<torch::Tensor> CLIPVisionTransformerImpl::hidden_states(const torch::Tensor& pixel_values,
                                                                    std::int64_t up_to, const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  const auto n = cfg.num_hidden_layers;
  if (up_to < 0) up_to = n;
  if (up_to > n)
    throw RuntimeError("CLIP vision tower: hidden state " + std::to_string(up_to) + " requested, the model has " +
                       std::to_string(n + 1));
  std::vector<torch::Tensor> states;
  states.reserve(static_cast<std::size_t>(up_to + 1));
  auto h = pre_layrnorm(embeddings(pixel_values));  // [B, T, D]
  nn::tap_if(tap, "vision.hidden_state", 0, h);
  states.push_back(h);
  encoder->forward(h, /*mask=*/{}, up_to, [&](std::int64_t i, const torch::Tensor& x) {
    nn::tap_if(tap, "vision.hidden_state", i + 1, x);
    states.push_back(x);
  });
  return states;
}

std::vector<torch::Tensor> CLIPVisionModelImpl::hidden_states(const torch::Tensor& pixel_values, std::int64_t up_to,
                                                              const nn::Tap& tap) {
  return vision_model->hidden_states(pixel_values, up_to, tap);
}

torch::Tensor CLIPVisionModelImpl::pooled(const torch::Tensor& last_hidden_state) {
  nn::ForwardGuard no_grad;
  return vision_model->post_layernorm(last_hidden_state.select(1, 0));
}

}  // namespace lli::models
