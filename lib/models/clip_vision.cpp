// Ref: transformers/models/clip/modeling_clip.py CLIPVisionModel (v4.45), eager attention.
#include "models/clip_vision.h"

#include <string>

#include "lli/error.h"

namespace lli::models {

nn::CLIPLayerConfig CLIPVisionConfig::layer_config() const {
  nn::CLIPLayerConfig c;
  c.hidden_size = hidden_size;
  c.intermediate_size = intermediate_size;
  c.n_head = num_attention_heads;
  c.layer_norm_eps = layer_norm_eps;
  c.act = hidden_act;
  c.causal = false;
  return c;
}

CLIPVisionConfig parse_clip_vision_config(const ConfigReader& r, const CLIPVisionConfig& base) {
  CLIPVisionConfig c = base;
  c.hidden_size = r.get_int("hidden_size", c.hidden_size);
  c.intermediate_size = r.get_int("intermediate_size", c.intermediate_size);
  c.projection_dim = r.get_int("projection_dim", c.projection_dim);
  c.num_hidden_layers = r.get_int("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.get_int("num_attention_heads", c.num_attention_heads);
  c.num_channels = r.get_int("num_channels", c.num_channels);
  c.image_size = r.get_int("image_size", c.image_size);
  c.patch_size = r.get_int("patch_size", c.patch_size);
  if (r.has("hidden_act"))
    c.hidden_act = nn::parse_activation(r.get_string("hidden_act", ""), r.where("hidden_act"));
  c.layer_norm_eps = r.get_double("layer_norm_eps", c.layer_norm_eps);

  r.require_positive("hidden_size", c.hidden_size);
  r.require_positive("intermediate_size", c.intermediate_size);
  r.require_positive("num_hidden_layers", c.num_hidden_layers);
  r.require_positive("num_attention_heads", c.num_attention_heads);
  r.require_positive("num_channels", c.num_channels);
  r.require_positive("image_size", c.image_size);
  r.require_positive("patch_size", c.patch_size);
  if (c.hidden_size % c.num_attention_heads != 0)
    throw ModelError(r.where("hidden_size") + ": " + std::to_string(c.hidden_size) +
                     " is not divisible by num_attention_heads " + std::to_string(c.num_attention_heads));
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

CLIPEncoderImpl::CLIPEncoderImpl(const nn::CLIPLayerConfig& cfg, std::int64_t n_layer) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < n_layer; ++i) {
    layer_list.push_back(nn::CLIPEncoderLayer(cfg));
    layers->push_back(layer_list.back());
  }
}

CLIPVisionTransformerImpl::CLIPVisionTransformerImpl(const CLIPVisionConfig& cfg) {
  embeddings = register_module("embeddings", CLIPVisionEmbeddings(cfg));
  pre_layrnorm = register_module("pre_layrnorm", nn::LayerNorm(cfg.hidden_size, cfg.layer_norm_eps));
  encoder = register_module("encoder", CLIPEncoder(cfg.layer_config(), cfg.num_hidden_layers));
  post_layernorm = register_module("post_layernorm", nn::LayerNorm(cfg.hidden_size, cfg.layer_norm_eps));
}

CLIPVisionModelImpl::CLIPVisionModelImpl(const CLIPVisionConfig& c) : cfg(c) {
  vision_model = register_module("vision_model", CLIPVisionTransformer(c));
}

std::vector<torch::Tensor> CLIPVisionModelImpl::hidden_states(const torch::Tensor& pixel_values, std::int64_t up_to,
                                                              const nn::Tap& tap) {
  torch::NoGradGuard no_grad;
  const auto n = cfg.num_hidden_layers;
  if (up_to < 0) up_to = n;
  if (up_to > n)
    throw RuntimeError("CLIP vision tower: hidden state " + std::to_string(up_to) + " requested, the model has " +
                       std::to_string(n + 1));
  std::vector<torch::Tensor> states;
  states.reserve(static_cast<std::size_t>(up_to + 1));
  auto& vm = *vision_model;
  auto h = vm.pre_layrnorm(vm.embeddings(pixel_values));  // [B, T, D]
  nn::tap_if(tap, "vision.hidden_state", 0, h);
  states.push_back(h);
  for (std::int64_t i = 0; i < up_to; ++i) {
    h = vm.encoder->layer_list[static_cast<std::size_t>(i)]->forward(h);
    nn::tap_if(tap, "vision.hidden_state", i + 1, h);
    states.push_back(h);
  }
  return states;
}

torch::Tensor CLIPVisionModelImpl::pooled(const torch::Tensor& last_hidden_state) {
  torch::NoGradGuard no_grad;
  return vision_model->post_layernorm(last_hidden_state.select(1, 0));
}

}  // namespace lli::models
