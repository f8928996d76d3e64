// Ref: transformers/models/owlvit/modeling_owlvit.py OwlViTForObjectDetection (image_embedder,
// class_predictor, box_predictor, compute_box_bias), OwlViTClassPredictionHead,
// OwlViTBoxPredictionHead, OwlViTModel (text_embeds normalisation); models/owlv2/modeling_owlv2.py
// (objectness_predictor) (v4.45). See owl.h.
#include "models/owl.h"
#include "nn/grad_mode.h"

#include <string>

#include "lli/error.h"
#include "lli/log.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"

namespace lli::models {

OwlConfig parse_owl_config(const ConfigReader& r) {
  OwlConfig c;
  const std::string type = r.get_string("model_type", "");
  if (type == "owlv2") {
    c.variant = OwlVariant::owlv2;
  } else if (type == "owlvit") {
    c.variant = OwlVariant::owlvit;
  } else {
    throw ModelError(r.where("model_type") + ": \"" + type + "\" is not an OWL detector (expected owlv2 or owlvit)");
  }
  // OwlViTTextConfig / Owlv2TextConfig defaults.
  CLIPTextConfig t;
  t.hidden_size = 512;
  t.intermediate_size = 2048;
  t.num_hidden_layers = 12;
  t.num_attention_heads = 8;
  t.max_position_embeddings = 16;
  t.pad_token_id = 0;
  t.pool_at_argmax_id = true;
  c.text = parse_clip_text_config(r.child("text_config"), t);
  c.text.pool_at_argmax_id = true;
  // OwlViTVisionConfig (patch 32) / Owlv2VisionConfig (patch 16) defaults.
  CLIPVisionConfig v;
  v.hidden_size = 768;
  v.intermediate_size = 3072;
  v.num_hidden_layers = 12;
  v.num_attention_heads = 12;
  v.image_size = 768;
  v.patch_size = c.variant == OwlVariant::owlv2 ? 16 : 32;
  v.pre_layernorm_key = "pre_layernorm";
  c.vision = parse_clip_vision_config(r.child("vision_config"), v);
  if (c.vision.num_channels != 3)
    throw ModelError(r.where("vision_config") + ": num_channels " + std::to_string(c.vision.num_channels) +
                     " (OWL image processors give RGB: 3)");
  c.projection_dim = r.get_int("projection_dim", c.projection_dim);
  r.require_positive("projection_dim", c.projection_dim);
  if (c.projection_dim != c.text.hidden_size)
    throw ModelError(r.where("projection_dim") + ": " + std::to_string(c.projection_dim) +
                     " differs from text_config.hidden_size " + std::to_string(c.text.hidden_size) +
                     " (the class head compares image features of the text width with the projected queries)");
  return c;
}

// ---------------------------------------------------------------------------------------------
// Modules

OwlCLIPImpl::OwlCLIPImpl(const OwlConfig& c) {
  text_model = register_module("text_model", CLIPTextTransformer(c.text));
  vision_model = register_module("vision_model", CLIPVisionTransformer(c.vision));
  text_projection = register_module("text_projection", nn::Linear(c.text.hidden_size, c.projection_dim, false));
  visual_projection = register_module("visual_projection", nn::Linear(c.vision.hidden_size, c.projection_dim, false));
  logit_scale = register_parameter("logit_scale", nn::placeholder({}), false);
}

OwlClassHeadImpl::OwlClassHeadImpl(const OwlConfig& c) {
  dense0 = register_module("dense0", nn::Linear(c.vision.hidden_size, c.text.hidden_size));
  logit_shift = register_module("logit_shift", nn::Linear(c.vision.hidden_size, 1));
  logit_scale = register_module("logit_scale", nn::Linear(c.vision.hidden_size, 1));
}

OwlBoxHeadImpl::OwlBoxHeadImpl(std::int64_t width, std::int64_t out) {
  dense0 = register_module("dense0", nn::Linear(width, width));
  dense1 = register_module("dense1", nn::Linear(width, width));
  dense2 = register_module("dense2", nn::Linear(width, out));
}

torch::Tensor OwlBoxHeadImpl::forward(const torch::Tensor& x) {
  auto h = torch::gelu(dense0(x));  // nn.GELU(): exact erf
  h = torch::gelu(dense1(h));
  return dense2(h);
}

torch::Tensor owl_box_bias(std::int64_t g) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  auto coord = torch::arange(1, g + 1, opts) / static_cast<double>(g);          // [g]
  auto xx = coord.view({1, g}).expand({g, g}), yy = coord.view({g, 1}).expand({g, g});  // meshgrid "xy"
  auto corners = torch::stack({xx, yy}, -1).reshape({g * g, 2}).clamp(0.0, 1.0);  // row-major patches
  auto logit = [](const torch::Tensor& x) { return torch::log(x + 1e-4) - torch::log1p(-x + 1e-4); };
  auto size = torch::full_like(corners, 1.0 / static_cast<double>(g));
  return torch::cat({logit(corners), logit(size)}, -1);  // [g*g, 4]
}

OwlModelImpl::OwlModelImpl(const OwlConfig& c) : cfg(c) {
  owl = register_module(cfg.prefix(), OwlCLIP(c));
  class_head = register_module("class_head", OwlClassHead(c));
  box_head = register_module("box_head", OwlBoxHead(c.vision.hidden_size, 4));
  if (c.variant == OwlVariant::owlv2)
    objectness_head = register_module("objectness_head", OwlBoxHead(c.vision.hidden_size, 1));
  layer_norm = register_module("layer_norm", nn::LayerNorm(c.vision.hidden_size, c.vision.layer_norm_eps));
  box_bias_ = owl_box_bias(c.grid());
}

torch::Tensor OwlModelImpl::image_features(const torch::Tensor& pixel_values, const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  auto& vm = *owl->vision_model;
  auto h = vm.pre_layrnorm(vm.embeddings(pixel_values));  // [B, 1 + N, Dv]
  nn::tap_if(tap, "vision.hidden_state", 0, h);
  h = vm.encoder->forward(h, /*mask=*/{}, /*n=*/-1,
                          [&](std::int64_t i, const torch::Tensor& x) { nn::tap_if(tap, "vision.hidden_state", i + 1, x); });
  auto post = vm.post_layernorm(h).to(torch::kFloat32);  // every token, not only CLS
  nn::tap_if(tap, "owl.post_layernorm", -1, post);
  const auto n = post.size(1) - 1;
  auto feats = post.narrow(1, 1, n) * post.narrow(1, 0, 1);  // [B, N, Dv] patch tokens times CLS
  feats = layer_norm(feats);
  nn::tap_if(tap, "owl.image_embeds", -1, feats);
  return feats;
}

OwlHeads OwlModelImpl::heads(const torch::Tensor& features) {
  nn::ForwardGuard no_grad;
  auto f = features.to(torch::kFloat32);  // [B, N, Dv]
  if (f.dim() != 3 || f.size(1) != cfg.num_boxes() || f.size(2) != cfg.vision.hidden_size)
    throw InputError("OWL heads: features of shape " + c10::str(f.sizes()) + ", expected [B, " +
                     std::to_string(cfg.num_boxes()) + ", " + std::to_string(cfg.vision.hidden_size) + "]");
  OwlHeads o;
  auto ce = class_head->dense0(f);                        // [B, N, Dt]
  o.class_embeds = ce / (ce.norm(2, -1, true) + 1e-6);
  o.logit_shift = class_head->logit_shift(f);             // [B, N, 1]
  o.logit_scale = torch::elu(class_head->logit_scale(f)) + 1;
  o.pred_boxes = torch::sigmoid(box_head(f) + box_bias_.to(f.device()));  // [B, N, 4]
  if (objectness_head) o.objectness = objectness_head(f).select(-1, 0);   // [B, N]
  return o;
}

torch::Tensor OwlModelImpl::query_embeds(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                         const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  auto out = owl->text_model->forward(input_ids, attention_mask, tap);
  auto feats = owl->text_projection(out.pooler_output.to(torch::kFloat32));  // [Q, Dp]
  nn::tap_if(tap, "owl.text_features", -1, feats);
  return feats / feats.norm(2, -1, true);  // no epsilon (OwlViTModel.forward)
}

torch::Tensor OwlModelImpl::class_logits(const OwlHeads& h, const torch::Tensor& queries) {
  nn::ForwardGuard no_grad;
  auto q = queries.to(h.class_embeds.device(), torch::kFloat32);  // [Q, Dp]
  q = q / (q.norm(2, -1, true) + 1e-6);
  auto logits = torch::matmul(h.class_embeds, q.t());             // [B, N, Q]
  return (logits + h.logit_shift) * h.logit_scale;
}

// ---------------------------------------------------------------------------------------------
// Loading

OwlModel load_owl(const std::filesystem::path& dir, const OwlLoadOptions& opts) {
  if (opts.dtype != torch::kFloat32 && opts.dtype != torch::kBFloat16 && opts.dtype != torch::kHalf)
    throw ModelError("OWL: unsupported compute dtype " + std::string(c10::toString(opts.dtype)) +
                     " (f32, bf16, or f16 on CUDA)");
  if (opts.dtype == torch::kHalf && opts.device.is_cpu())
    throw ModelError("OWL: fp16 compute is not supported on CPU (use f32 or bf16)");
  const auto cfg_path = dir / "config.json";
  const auto j = read_json_file(cfg_path);
  const OwlConfig cfg = parse_owl_config(ConfigReader(j, cfg_path.string()));

  auto ckpt = st::Checkpoint::open(dir);
  TensorMap tensors = load_tensors(ckpt);
  const std::string p = cfg.prefix();
  tensors.erase(p + ".text_model.embeddings.position_ids");  // buffers of older exports
  tensors.erase(p + ".vision_model.embeddings.position_ids");

  OwlModel model(cfg);
  BindOptions bo;
  bo.dtype = torch::kFloat32;
  bo.device = opts.device;
  bo.source = ckpt.source();
  bind_weights(*model, tensors, bo);
  if (opts.dtype != torch::kFloat32) {
    model->owl->text_model->to(opts.dtype);
    model->owl->vision_model->to(opts.dtype);
  }
  model->eval();
  log_debug("loaded {} from {}: vision D{} L{} {}px/{} ({} boxes), text D{} L{}, projection {}, towers {}", p,
            dir.string(), cfg.vision.hidden_size, cfg.vision.num_hidden_layers, cfg.vision.image_size,
            cfg.vision.patch_size, cfg.num_boxes(), cfg.text.hidden_size, cfg.text.num_hidden_layers,
            cfg.projection_dim, c10::toString(opts.dtype));
  return model;
}

}  // namespace lli::models
