// The encoder hyper-parameters both CLIP towers read from their configs (CLIPVisionConfig and
// CLIPTextConfig each declare them, with different defaults), parsed and validated once.
// Ref: transformers/models/clip/configuration_clip.py (v4.45).
#pragma once

#include <cstdint>
#include <string>

#include "lli/error.h"
#include "models/config_json.h"
#include "nn/activation.h"
#include "nn/clip_layer.h"

namespace lli::models {

struct CLIPEncoderConfig {
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t projection_dim = 0;  // the CLIPModel projection; unused by the towers themselves
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  nn::Activation hidden_act = nn::Activation::quick_gelu;
  double layer_norm_eps = 1e-5;

  nn::CLIPLayerConfig encoder_layer_config(bool causal) const {
    nn::CLIPLayerConfig c;
    c.hidden_size = hidden_size;
    c.intermediate_size = intermediate_size;
    c.n_head = num_attention_heads;
    c.layer_norm_eps = layer_norm_eps;
    c.act = hidden_act;
    c.causal = causal;
    return c;
  }
};

// Reads the CLIPEncoderConfig keys present in `r` into `c` (absent keys keep c's values) and
// validates them (ModelError naming the file and key).
inline void parse_clip_encoder_config(const ConfigReader& r, CLIPEncoderConfig& c) {
  c.hidden_size = r.get_int("hidden_size", c.hidden_size);
  c.intermediate_size = r.get_int("intermediate_size", c.intermediate_size);
  c.projection_dim = r.get_int("projection_dim", c.projection_dim);
  c.num_hidden_layers = r.get_int("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.get_int("num_attention_heads", c.num_attention_heads);
  if (r.has("hidden_act")) c.hidden_act = nn::parse_activation(r.get_string("hidden_act", ""), r.where("hidden_act"));
  c.layer_norm_eps = r.get_double("layer_norm_eps", c.layer_norm_eps);

  r.require_positive("hidden_size", c.hidden_size);
  r.require_positive("intermediate_size", c.intermediate_size);
  r.require_positive("num_hidden_layers", c.num_hidden_layers);
  r.require_positive("num_attention_heads", c.num_attention_heads);
  if (c.hidden_size % c.num_attention_heads != 0)
    throw ModelError(r.where("hidden_size") + ": " + std::to_string(c.hidden_size) +
                     " is not divisible by num_attention_heads " + std::to_string(c.num_attention_heads));
  if (!(c.layer_norm_eps > 0))
    throw ModelError(r.where("layer_norm_eps") + ": must be positive, got " + std::to_string(c.layer_norm_eps));
}

}  // namespace lli::models
