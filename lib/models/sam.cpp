// Ref: transformers/models/sam/modeling_sam.py SamModel (get_image_embeddings,
// get_image_wide_positional_embeddings, forward with image_embeddings), configuration_sam.py (v4.45).
#include "models/sam.h"
#include "nn/grad_mode.h"

#include <string>

#include "lli/error.h"
#include "lli/log.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"

namespace lli::models {

SamConfig parse_sam_config(const nlohmann::json& j, const std::string& source) {
  ConfigReader r(j, source);
  const std::string model_type = r.get_string("model_type", "sam");
  if (model_type != "sam")
    throw ModelError(r.where("model_type") + ": \"" + model_type + "\" is not a Segment Anything model (expected \"sam\")");
  SamConfig c;
  c.vision = parse_sam_vision_config(r.child("vision_config"));
  c.prompt_encoder = parse_sam_prompt_encoder_config(r.child("prompt_encoder_config"));
  c.mask_decoder = parse_sam_mask_decoder_config(r.child("mask_decoder_config"));

  const auto C = c.mask_decoder.hidden_size;
  auto mismatch = [&](const std::string& what, std::int64_t got) {
    throw ModelError(source + ": " + what + " = " + std::to_string(got) + " but mask_decoder_config.hidden_size = " +
                     std::to_string(C) + " (the image embedding width must agree)");
  };
  if (c.vision.output_channels != C) mismatch("vision_config.output_channels", c.vision.output_channels);
  if (c.prompt_encoder.hidden_size != C) mismatch("prompt_encoder_config.hidden_size", c.prompt_encoder.hidden_size);
  if (2 * c.vision.num_pos_feats != C) mismatch("2 * vision_config.num_pos_feats", 2 * c.vision.num_pos_feats);
  if (c.vision.grid() != c.prompt_encoder.image_embedding_size())
    throw ModelError(source + ": the image encoder's grid (vision_config.image_size / patch_size = " +
                     std::to_string(c.vision.grid()) + ") differs from the prompt encoder's (" +
                     std::to_string(c.prompt_encoder.image_embedding_size()) + ")");
  return c;
}

SamConfig load_sam_config(const std::filesystem::path& dir) {
  auto path = dir / "config.json";
  auto j = read_json_file(path);
  return parse_sam_config(j, path.string());
}

SamModelImpl::SamModelImpl(const SamConfig& c) : cfg(c) {
  shared_image_embedding = register_module("shared_image_embedding", SamPositionalEmbedding(c.vision.num_pos_feats));
  vision_encoder = register_module("vision_encoder", SamVisionEncoder(c.vision));
  prompt_encoder = register_module("prompt_encoder", SamPromptEncoder(c.prompt_encoder));
  mask_decoder = register_module("mask_decoder", SamMaskDecoder(c.mask_decoder));
}

torch::Tensor SamModelImpl::get_image_embeddings(const torch::Tensor& pixel_values, const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  return vision_encoder->forward(pixel_values, tap).to(torch::kFloat32);
}

torch::Tensor SamModelImpl::get_image_wide_positional_embeddings() {
  nn::ForwardGuard no_grad;
  const auto& G = shared_image_embedding->positional_embedding;
  if (image_pe_.defined() && image_pe_.device() == G.device()) return image_pe_;
  const auto g = cfg.grid();
  auto grid = torch::ones({g, g}, G.options());
  auto y = (grid.cumsum(0) - 0.5) / static_cast<double>(g);  // [g, g]
  auto x = (grid.cumsum(1) - 0.5) / static_cast<double>(g);
  auto pe = shared_image_embedding->forward(torch::stack({x, y}, -1));  // [g, g, C]
  image_pe_ = pe.permute({2, 0, 1}).unsqueeze(0).contiguous();         // [1, C, g, g]
  return image_pe_;
}

SamPromptEmbeddings SamModelImpl::embed_prompts(const SamPromptTensors& prompts) {
  return prompt_encoder->forward(*shared_image_embedding, prompts);
}

SamDecodeResult SamModelImpl::decode(const torch::Tensor& image_embeddings, const SamPromptTensors& prompts,
                                     bool multimask, const nn::Tap& tap) {
  return decode(image_embeddings, embed_prompts(prompts), multimask, tap);
}

SamDecodeResult SamModelImpl::decode(const torch::Tensor& image_embeddings, const SamPromptEmbeddings& prompts,
                                     bool multimask, const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  auto out = mask_decoder->forward(image_embeddings, get_image_wide_positional_embeddings(), prompts.sparse,
                                   prompts.dense, multimask, tap);
  return {out.iou_scores.to(torch::kFloat32), out.masks.to(torch::kFloat32)};
}

SamModel load_sam(const std::filesystem::path& dir, const SamLoadOptions& opts) {
  SamConfig cfg = load_sam_config(dir);
  if (opts.dtype != torch::kFloat32 && opts.dtype != torch::kBFloat16 && opts.dtype != torch::kHalf)
    throw ModelError("SAM: unsupported compute dtype " + std::string(c10::toString(opts.dtype)) +
                     " (f32, bf16, or f16 on CUDA)");
  if (opts.dtype == torch::kHalf && opts.device.is_cpu())
    throw ModelError("SAM: fp16 compute is not supported on CPU (use f32 or bf16)");

  auto ckpt = st::Checkpoint::open(dir);
  TensorMap tensors = load_tensors(ckpt);
  // The prompt encoder's tied copy of the positional embedding (not stored by transformers; other
  // exporters may keep it).
  const std::string tied = "prompt_encoder.shared_embedding.positional_embedding";
  const std::string shared = "shared_image_embedding.positional_embedding";
  if (tensors.count(tied)) {
    if (!tensors.count(shared)) tensors[shared] = tensors[tied];
    if (tensors[tied].sizes() == tensors[shared].sizes()) tensors.erase(tied);
  }

  SamModel model(cfg);
  BindOptions bo;
  bo.dtype = torch::kFloat32;
  bo.device = opts.device;
  bo.source = ckpt.source();
  bind_weights(*model, tensors, bo);
  if (opts.dtype != torch::kFloat32) model->vision_encoder->to(opts.dtype);
  log_debug("loaded SAM from {}: image {} patch {} D{} L{} H{} window {}, embedding {}x{}x{}, encoder {}", dir.string(),
            cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.hidden_size, cfg.vision.num_hidden_layers,
            cfg.vision.num_attention_heads, cfg.vision.window_size, cfg.embed_dim(), cfg.grid(), cfg.grid(),
            c10::toString(opts.dtype));
  return model;
}

}  // namespace lli::models
