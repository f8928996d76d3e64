// OWL-ViT and OWLv2 open-vocabulary detectors (transformers OwlViTForObjectDetection /
// Owlv2ForObjectDetection), one implementation with the variant as a config flag. Module tree =
// the checkpoint: <prefix>.{text_model, vision_model, text_projection, visual_projection,
// logit_scale}, class_head.{dense0, logit_shift, logit_scale}, box_head.dense{0,1,2},
// objectness_head.dense{0,1,2} (owlv2), layer_norm; <prefix> = model_type ("owlvit" | "owlv2").
// The towers are the shared CLIP ones (models/clip_text.h, models/clip_vision.h).
//
// Detection forward, split so that image features can be cached and queried again:
//   image_features(pixel_values): vision tower -> post_layernorm on every token -> patch tokens
//     times the CLS token -> layer_norm -> [B, g*g, Dv] (patches row-major);
//   heads(features): class_head.dense0 normalised by (norm + 1e-6), logit_shift,
//     elu(logit_scale) + 1, sigmoid(box_head + box_bias) as (cx, cy, w, h) of the square input,
//     objectness (owlv2) — all independent of the queries;
//   query_embeds(input_ids, attention_mask): text tower pooled at argmax(input_ids) ->
//     text_projection -> divided by its L2 norm (no epsilon);
//   class_logits(heads, queries): (cos(class_embeds, queries / (norm + 1e-6)) + shift) * scale.
// Ref: transformers/models/owlvit/modeling_owlvit.py, models/owlv2/modeling_owlv2.py,
//      configuration_owl{vit,v2}.py (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "models/clip_text.h"
#include "models/clip_vision.h"
#include "models/config_json.h"
#include "models/owl_preprocess.h"
#include "nn/layers.h"
#include "nn/tap.h"

namespace lli::models {

// Defaults = transformers' Owl{ViT,v2}Config (text and vision sub-configs included).
struct OwlConfig {
  OwlVariant variant = OwlVariant::owlv2;
  CLIPTextConfig text;
  CLIPVisionConfig vision;
  std::int64_t projection_dim = 512;

  std::int64_t grid() const { return vision.image_size / vision.patch_size; }  // patches per side
  std::int64_t num_boxes() const { return grid() * grid(); }
  const char* prefix() const { return owl_variant_name(variant); }
};

// config.json of an OWL checkpoint: model_type "owlvit" | "owlv2" picks the variant (ModelError
// for another). Validates sizes, and projection_dim == text hidden_size (the class head compares
// image features mapped to the text width with the projected queries).
OwlConfig parse_owl_config(const ConfigReader& r);

struct OwlCLIPImpl : torch::nn::Module {  // the checkpoint's `owlvit` / `owlv2` submodule
  explicit OwlCLIPImpl(const OwlConfig& cfg);
  CLIPTextTransformer text_model{nullptr};
  CLIPVisionTransformer vision_model{nullptr};
  nn::Linear text_projection{nullptr};    // [Dp, Dt], no bias
  nn::Linear visual_projection{nullptr};  // [Dp, Dv], no bias; not used for detection
  torch::Tensor logit_scale;              // [] ; not used for detection
};
TORCH_MODULE(OwlCLIP);

struct OwlClassHeadImpl : torch::nn::Module {
  explicit OwlClassHeadImpl(const OwlConfig& cfg);
  nn::Linear dense0{nullptr};       // Dv -> Dt
  nn::Linear logit_shift{nullptr};  // Dv -> 1
  nn::Linear logit_scale{nullptr};  // Dv -> 1
};
TORCH_MODULE(OwlClassHead);

// dense0 -> GELU (exact) -> dense1 -> GELU -> dense2 (box: 4 outputs, objectness: 1).
struct OwlBoxHeadImpl : torch::nn::Module {
  OwlBoxHeadImpl(std::int64_t width, std::int64_t out);
  torch::Tensor forward(const torch::Tensor& x);  // [..., width] -> [..., out]
  nn::Linear dense0{nullptr}, dense1{nullptr}, dense2{nullptr};
};
TORCH_MODULE(OwlBoxHead);

// Per-box outputs that do not depend on the queries (fp32).
struct OwlHeads {
  torch::Tensor class_embeds;  // [B, N, Dt] dense0(features) / (norm + 1e-6)
  torch::Tensor logit_shift;   // [B, N, 1]
  torch::Tensor logit_scale;   // [B, N, 1] elu(.) + 1
  torch::Tensor pred_boxes;    // [B, N, 4] (cx, cy, w, h) in 0..1 of the square input
  torch::Tensor objectness;    // [B, N] (owlv2) or undefined
};

struct OwlModelImpl : torch::nn::Module {
  explicit OwlModelImpl(const OwlConfig& cfg);

  // pixel_values [B, 3, S, S] -> [B, N, Dv] fp32 (see the header comment). Taps
  // "vision.hidden_state" i, "owl.post_layernorm" and "owl.image_embeds".
  torch::Tensor image_features(const torch::Tensor& pixel_values, const nn::Tap& tap = {});
  // features [B, N, Dv] (any float dtype) -> the query-independent head outputs, fp32.
  OwlHeads heads(const torch::Tensor& features);
  // input_ids, attention_mask [Q, T] -> text_embeds [Q, Dp] fp32, unit norm. Taps the text tower
  // ("text.hidden_state", "text.last_hidden_state") and "owl.text_features" (before the norm).
  torch::Tensor query_embeds(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                             const nn::Tap& tap = {});
  // heads of one image (B = 1 or broadcast) and queries [Q, Dp] -> logits [B, N, Q] fp32.
  static torch::Tensor class_logits(const OwlHeads& h, const torch::Tensor& queries);

  torch::Tensor box_bias() const { return box_bias_; }  // [N, 4] fp32

  OwlConfig cfg;
  OwlCLIP owl{nullptr};  // registered as cfg.prefix()
  OwlClassHead class_head{nullptr};
  OwlBoxHead box_head{nullptr};
  OwlBoxHead objectness_head{nullptr};  // owlv2 only
  nn::LayerNorm layer_norm{nullptr};

 private:
  torch::Tensor box_bias_;
};
TORCH_MODULE(OwlModel);

// The reference's compute_box_bias(g): logit of the patches' bottom-right corners ((col + 1) / g,
// (row + 1) / g) clipped to [0, 1] and of 1 / g for w and h, logit(x) = log(x + 1e-4) -
// log1p(-x + 1e-4); [g*g, 4] fp32.
torch::Tensor owl_box_bias(std::int64_t g);

struct OwlLoadOptions {
  torch::Dtype dtype = torch::kFloat32;  // the vision and text towers' compute dtype (f32 / bf16);
                                         // the heads always run in fp32
  torch::Device device = torch::kCPU;
};

// Loads <dir>/config.json and model.safetensors (or a sharded index) strictly; position_ids
// buffers of older exports are accepted and ignored. ModelError naming the file otherwise.
OwlModel load_owl(const std::filesystem::path& dir, const OwlLoadOptions& opts = {});

}  // namespace lli::models
