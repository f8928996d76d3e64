// Segment Anything prompt encoder: random-Fourier positional embedding shared with the mask
// decoder's image positional encoding, sparse point/box embeddings, dense mask embeddings.
// Module tree = transformers' SamPromptEncoder state_dict under "prompt_encoder.": mask_embed.
// {conv1, layer_norm1, conv2, layer_norm2, conv3}, no_mask_embed, point_embed.N, not_a_point_embed.
// The positional embedding is SamModel's top-level "shared_image_embedding.positional_embedding"
// (the prompt encoder's tied copy is not stored), so it is a separate module passed in.
// Ref: transformers/models/sam/modeling_sam.py SamPositionalEmbedding, SamMaskEmbedding,
//      SamPromptEncoder; configuration_sam.py SamPromptEncoderConfig (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "models/config_json.h"
#include "models/sam_image_encoder.h"
#include "nn/activation.h"
#include "nn/layers.h"

namespace lli::models {

// Defaults = transformers' SamPromptEncoderConfig().
struct SamPromptEncoderConfig {
  std::int64_t hidden_size = 256;
  std::int64_t image_size = 1024;
  std::int64_t patch_size = 16;
  std::int64_t mask_input_channels = 16;
  std::int64_t num_point_embeddings = 4;
  nn::Activation hidden_act = nn::Activation::gelu;
  double layer_norm_eps = 1e-6;

  // transformers derives it (image_size // patch_size) whatever config.json stores.
  std::int64_t image_embedding_size() const { return image_size / patch_size; }
  // Side of a dense mask prompt: mask_embed downsamples by 4.
  std::int64_t mask_input_size() const { return 4 * image_embedding_size(); }
};

SamPromptEncoderConfig parse_sam_prompt_encoder_config(const ConfigReader& r);

// Point labels (transformers / original SAM).
enum SamPointLabel : std::int64_t {
  sam_label_pad = -10,       // padding point of a ragged batch: zero embedding
  sam_label_not_a_point = -1,  // not_a_point_embed
  sam_label_negative = 0,
  sam_label_positive = 1,
};

// SamPositionalEmbedding: buffer positional_embedding [2, F] (F = num_pos_feats).
struct SamPositionalEmbeddingImpl : torch::nn::Module {
  explicit SamPositionalEmbeddingImpl(std::int64_t num_pos_feats);
  // coords: [..., 2] (x, y) normalised to [0, 1], any float dtype: 2 * c - 1 is computed in the
  // input's dtype, then cast to the buffer's dtype, @ G, * 2 pi -> [sin, cos]: [..., 2F].
  torch::Tensor forward(const torch::Tensor& coords);
  torch::Tensor positional_embedding;  // [2, F]
};
TORCH_MODULE(SamPositionalEmbedding);

struct SamMaskEmbeddingImpl : torch::nn::Module {
  explicit SamMaskEmbeddingImpl(const SamPromptEncoderConfig& cfg);
  // masks: [B, 1, 4g, 4g] -> [B, hidden, g, g]
  torch::Tensor forward(const torch::Tensor& masks);
  nn::Activation act;
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  SamLayerNorm2d layer_norm1{nullptr}, layer_norm2{nullptr};
};
TORCH_MODULE(SamMaskEmbedding);

// Prompt tensors in the resized-image frame (what SamProcessor returns), any of them undefined.
struct SamPromptTensors {
  torch::Tensor points;  // [B, pb, n, 2] float (x, y) pixels of the resized image (float64 like the processor)
  torch::Tensor labels;  // [B, pb, n] int64 (SamPointLabel)
  torch::Tensor boxes;   // [B, nb, 4] float (x0, y0, x1, y1); with points, nb must equal pb
  torch::Tensor masks;   // [B, 1, 4g, 4g] dense mask prompt (low-res mask logits)
};

struct SamPromptEmbeddings {
  torch::Tensor sparse;  // [B, pb, k, C]; k = 0 when there are no points and no boxes
  torch::Tensor dense;   // [B, C, g, g]
};

struct SamPromptEncoderImpl : torch::nn::Module {
  explicit SamPromptEncoderImpl(const SamPromptEncoderConfig& cfg);

  // As SamPromptEncoder.forward: points get +0.5 (pixel centres), one extra "not a point"
  // (label -1) when there are no boxes, are normalised by image_size and embedded; boxes become two
  // corner points (+ point_embed[2], point_embed[3]) appended after the points; masks go through
  // mask_embed, otherwise no_mask_embed is broadcast. Output dtype = the weights' dtype.
  // InputError for inconsistent shapes.
  SamPromptEmbeddings forward(SamPositionalEmbeddingImpl& pe, const SamPromptTensors& in);

  SamPromptEncoderConfig cfg;
  SamMaskEmbedding mask_embed{nullptr};
  nn::Embedding no_mask_embed{nullptr};  // [1, C]
  torch::nn::ModuleList point_embed{nullptr};  // num_point_embeddings x Embedding [1, C]
  std::vector<nn::Embedding> point_embed_list;
  nn::Embedding not_a_point_embed{nullptr};  // [1, C]
};
TORCH_MODULE(SamPromptEncoder);

}  // namespace lli::models
