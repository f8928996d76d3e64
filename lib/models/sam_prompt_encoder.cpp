// Ref: transformers/models/sam/modeling_sam.py SamPositionalEmbedding, SamMaskEmbedding,
// SamPromptEncoder._embed_points / _embed_boxes / forward (v4.45); configuration_sam.py.
#include "models/sam_prompt_encoder.h"
#include "nn/grad_mode.h"

#include <cmath>
#include <string>

#include "lli/error.h"

namespace lli::models {

SamPromptEncoderConfig parse_sam_prompt_encoder_config(const ConfigReader& r) {
  SamPromptEncoderConfig c;
  c.hidden_size = r.get_int("hidden_size", c.hidden_size);
  c.image_size = r.get_int("image_size", c.image_size);
  c.patch_size = r.get_int("patch_size", c.patch_size);
  c.mask_input_channels = r.get_int("mask_input_channels", c.mask_input_channels);
  c.num_point_embeddings = r.get_int("num_point_embeddings", c.num_point_embeddings);
  if (r.has("hidden_act"))
    c.hidden_act = nn::parse_activation(r.get_string("hidden_act", ""), r.where("hidden_act"));
  c.layer_norm_eps = r.get_double("layer_norm_eps", c.layer_norm_eps);
  r.require_positive("hidden_size", c.hidden_size);
  r.require_positive("image_size", c.image_size);
  r.require_positive("patch_size", c.patch_size);
  r.require_positive("mask_input_channels", c.mask_input_channels);
  if (c.image_size % c.patch_size != 0)
    throw ModelError(r.where("image_size") + ": " + std::to_string(c.image_size) + " is not a multiple of patch_size " +
                     std::to_string(c.patch_size));
  if (c.mask_input_channels % 4 != 0)
    throw ModelError(r.where("mask_input_channels") + ": " + std::to_string(c.mask_input_channels) +
                     " is not a multiple of 4 (mask_embed.conv1 has mask_input_channels / 4 outputs)");
  if (c.num_point_embeddings < 4)
    throw ModelError(r.where("num_point_embeddings") + ": " + std::to_string(c.num_point_embeddings) +
                     " is fewer than the 4 SAM uses (negative, positive, box corner 1, box corner 2)");
  return c;
}

// ---- positional embedding ----------------------------------------------------------------

SamPositionalEmbeddingImpl::SamPositionalEmbeddingImpl(std::int64_t num_pos_feats) {
  positional_embedding = register_buffer("positional_embedding", nn::placeholder({2, num_pos_feats}));
}

torch::Tensor SamPositionalEmbeddingImpl::forward(const torch::Tensor& coords) {
  auto c = (2 * coords - 1).to(positional_embedding.scalar_type());  // [..., 2]
  c = torch::matmul(c, positional_embedding);                        // [..., F]
  c = c * (2.0 * M_PI);
  return torch::cat({torch::sin(c), torch::cos(c)}, -1);  // [..., 2F]
}

// ---- dense mask embedding -----------------------------------------------------------------

SamMaskEmbeddingImpl::SamMaskEmbeddingImpl(const SamPromptEncoderConfig& c) : act(c.hidden_act) {
  const auto quarter = c.mask_input_channels / 4;
  nn::Conv2dOptions o1;
  o1.in = 1;
  o1.out = quarter;
  o1.kernel = 2;
  o1.stride = 2;
  conv1 = register_module("conv1", nn::Conv2d(o1));
  nn::Conv2dOptions o2;
  o2.in = quarter;
  o2.out = c.mask_input_channels;
  o2.kernel = 2;
  o2.stride = 2;
  conv2 = register_module("conv2", nn::Conv2d(o2));
  nn::Conv2dOptions o3;
  o3.in = c.mask_input_channels;
  o3.out = c.hidden_size;
  o3.kernel = 1;
  conv3 = register_module("conv3", nn::Conv2d(o3));
  layer_norm1 = register_module("layer_norm1", SamLayerNorm2d(quarter, c.layer_norm_eps));
  layer_norm2 = register_module("layer_norm2", SamLayerNorm2d(c.mask_input_channels, c.layer_norm_eps));
}

torch::Tensor SamMaskEmbeddingImpl::forward(const torch::Tensor& masks) {
  auto h = nn::apply_activation(layer_norm1(conv1(masks)), act);  // [B, C/4, 2g, 2g]
  h = nn::apply_activation(layer_norm2(conv2(h)), act);           // [B, C_m, g, g]
  return conv3(h);                                                // [B, hidden, g, g]
}

// ---- prompt encoder -----------------------------------------------------------------------

SamPromptEncoderImpl::SamPromptEncoderImpl(const SamPromptEncoderConfig& c) : cfg(c) {
  mask_embed = register_module("mask_embed", SamMaskEmbedding(c));
  no_mask_embed = register_module("no_mask_embed", nn::Embedding(1, c.hidden_size));
  point_embed = register_module("point_embed", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.num_point_embeddings; ++i) {
    point_embed_list.push_back(nn::Embedding(1, c.hidden_size));
    point_embed->push_back(point_embed_list.back());
  }
  not_a_point_embed = register_module("not_a_point_embed", nn::Embedding(1, c.hidden_size));
}

SamPromptEmbeddings SamPromptEncoderImpl::forward(SamPositionalEmbeddingImpl& pe, const SamPromptTensors& in) {
  nn::ForwardGuard no_grad;
  const auto device = no_mask_embed->weight.device();
  const auto dtype = no_mask_embed->weight.scalar_type();
  const double S = static_cast<double>(cfg.image_size);
  const auto C = cfg.hidden_size;

  std::int64_t batch = 1;
  torch::Tensor sparse;
  if (in.points.defined()) {
    if (in.points.dim() != 4 || in.points.size(3) != 2)
      throw InputError("SAM prompt: points must be [B, point_batch, n, 2], got " + c10::str(in.points.sizes()));
    if (!in.labels.defined() || in.labels.dim() != 3 || in.labels.sizes() != in.points.sizes().slice(0, 3))
      throw InputError("SAM prompt: labels must be [B, point_batch, n] matching the points " +
                       c10::str(in.points.sizes()));
    batch = in.points.size(0);
    auto pts = in.points.to(device) + 0.5;  // pixel centres; [B, pb, n, 2]
    auto labels = in.labels.to(device, torch::kInt64);
    if (!in.boxes.defined()) {
      // Point-only prompts get one padding point (0, 0) labelled "not a point".
      pts = torch::cat({pts, torch::zeros({pts.size(0), pts.size(1), 1, 2}, pts.options())}, 2);
      labels = torch::cat({labels, torch::full({labels.size(0), labels.size(1), 1}, -1, labels.options())}, 2);
    }
    auto emb = pe.forward(pts / S).to(dtype);  // [B, pb, n', C]
    auto lab = labels.unsqueeze(-1);           // [B, pb, n', 1]
    emb = torch::where(lab == sam_label_not_a_point, not_a_point_embed->weight.view({1, 1, 1, C}), emb);
    emb = torch::where(lab != sam_label_pad, emb, torch::zeros({}, emb.options()));
    emb = torch::where(lab == sam_label_negative, emb + point_embed_list[0]->weight.view({1, 1, 1, C}), emb);
    emb = torch::where(lab == sam_label_positive, emb + point_embed_list[1]->weight.view({1, 1, 1, C}), emb);
    sparse = emb;
  }
  if (in.boxes.defined()) {
    if (in.boxes.dim() != 3 || in.boxes.size(2) != 4)
      throw InputError("SAM prompt: boxes must be [B, n_boxes, 4], got " + c10::str(in.boxes.sizes()));
    if (sparse.defined() && (in.boxes.size(0) != sparse.size(0) || in.boxes.size(1) != sparse.size(1)))
      throw InputError("SAM prompt: " + std::to_string(in.boxes.size(1)) + " boxes but a point batch of " +
                       std::to_string(sparse.size(1)) + " (give the points once per box)");
    batch = in.boxes.size(0);
    const auto nb = in.boxes.size(1);
    auto corners = (in.boxes.to(device) + 0.5).reshape({batch, nb, 2, 2});
    auto emb = pe.forward(corners / S).to(dtype);  // [B, nb, 2, C]
    auto corner_add = torch::stack({point_embed_list[2]->weight.view({C}), point_embed_list[3]->weight.view({C})}, 0);
    emb = emb + corner_add.view({1, 1, 2, C});
    sparse = sparse.defined() ? torch::cat({sparse, emb}, 2) : emb;
  }

  const auto g = cfg.image_embedding_size();
  torch::Tensor dense;
  if (in.masks.defined()) {
    const auto m = cfg.mask_input_size();
    if (in.masks.dim() != 4 || in.masks.size(1) != 1 || in.masks.size(2) != m || in.masks.size(3) != m)
      throw InputError("SAM prompt: a mask prompt must be [B, 1, " + std::to_string(m) + ", " + std::to_string(m) +
                       "], got " + c10::str(in.masks.sizes()));
    if (sparse.defined() && in.masks.size(0) != batch)
      throw InputError("SAM prompt: mask prompt batch " + std::to_string(in.masks.size(0)) +
                       " differs from the point/box batch " + std::to_string(batch));
    batch = in.masks.size(0);
    dense = mask_embed(in.masks.to(device, dtype));
  } else {
    dense = no_mask_embed->weight.view({1, C, 1, 1}).expand({batch, C, g, g});
  }
  if (!sparse.defined()) sparse = torch::zeros({batch, 1, 0, C}, torch::TensorOptions().dtype(dtype).device(device));
  return {sparse, dense};
}

}  // namespace lli::models
