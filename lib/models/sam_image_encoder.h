// Segment Anything image encoder (ViT with windowed + global attention and decomposed relative
// positions, then a convolutional neck), module tree = transformers' SamVisionEncoder state_dict
// under "vision_encoder.": patch_embed.projection, pos_embed, layers.N.{layer_norm1, attn.{qkv,
// proj, rel_pos_h, rel_pos_w}, layer_norm2, mlp.{lin1, lin2}}, neck.{conv1, layer_norm1, conv2,
// layer_norm2}.
// Also the two small blocks the other SAM parts share: the channels-first SamLayerNorm and the
// two-layer SamMLPBlock.
// Ref: transformers/models/sam/modeling_sam.py SamVisionEncoder, configuration_sam.py
//      SamVisionConfig (v4.45); facebookresearch/segment-anything modeling/image_encoder.py.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "models/config_json.h"
#include "nn/activation.h"
#include "nn/layers.h"
#include "nn/tap.h"

namespace lli::models {

// Defaults = transformers' SamVisionConfig() (ViT-H image encoder: the sam-vit-huge values).
struct SamVisionConfig {
  std::int64_t hidden_size = 768;
  std::int64_t output_channels = 256;
  std::int64_t num_hidden_layers = 12;
  std::int64_t num_attention_heads = 12;
  std::int64_t num_channels = 3;
  std::int64_t image_size = 1024;
  std::int64_t patch_size = 16;
  nn::Activation hidden_act = nn::Activation::gelu;
  double layer_norm_eps = 1e-6;
  bool qkv_bias = true;
  double mlp_ratio = 4.0;
  bool use_abs_pos = true;
  bool use_rel_pos = true;
  std::int64_t window_size = 14;  // 0 = every layer global
  std::vector<std::int64_t> global_attn_indexes{2, 5, 8, 11};
  std::int64_t num_pos_feats = 128;  // of the shared positional embedding (SamModel)
  std::int64_t mlp_dim = 3072;       // config "mlp_dim"; absent or null: int(hidden_size * mlp_ratio)

  std::int64_t grid() const { return image_size / patch_size; }  // embedding grid side
  std::int64_t head_dim() const { return hidden_size / num_attention_heads; }
  bool is_global(std::int64_t layer) const;
  std::int64_t layer_window(std::int64_t layer) const { return is_global(layer) ? 0 : window_size; }
};

// Reads a vision_config object (absent keys keep transformers' defaults) and validates it.
SamVisionConfig parse_sam_vision_config(const ConfigReader& r);

// SamLayerNorm(data_format="channels_first"): normalises over dim 1 of [B, C, H, W], computed in
// fp32 as the reference does ((x - mean) / sqrt(var + eps), cast back, then weight * x + bias).
struct SamLayerNorm2dImpl : torch::nn::Module {
  SamLayerNorm2dImpl(std::int64_t channels, double eps);
  torch::Tensor forward(const torch::Tensor& x);  // x: [B, C, H, W]
  double eps;
  torch::Tensor weight, bias;  // [C]
};
TORCH_MODULE(SamLayerNorm2d);

// x @ W^T + b for activations with many rows: fp32 CPU inputs go through oneDNN as a 1x1
// convolution over a channels-last view (no copies; libtorch 1.13 sends fp32 linear to the system
// BLAS, which on these CPUs is 2-10x slower than oneDNN), everything else through nn::Linear.
// x: [..., in] -> [..., out]
torch::Tensor sam_linear(nn::LinearImpl& l, const torch::Tensor& x);

// lin2(act(lin1(x))): the vision MLP and the mask decoder's transformer MLP.
struct SamMLPBlockImpl : torch::nn::Module {
  SamMLPBlockImpl(std::int64_t hidden, std::int64_t mlp_dim, nn::Activation act);
  torch::Tensor forward(const torch::Tensor& x);  // [..., hidden] -> [..., hidden]
  nn::Linear lin1{nullptr}, lin2{nullptr};
  nn::Activation act;
};
TORCH_MODULE(SamMLPBlock);

struct SamPatchEmbeddingsImpl : torch::nn::Module {
  explicit SamPatchEmbeddingsImpl(const SamVisionConfig& cfg);
  // pixel_values: [B, C, S, S] -> [B, g, g, D] (channels last)
  torch::Tensor forward(const torch::Tensor& pixel_values);
  SamVisionConfig cfg;
  nn::Conv2d projection{nullptr};
};
TORCH_MODULE(SamPatchEmbeddings);

// Multi-head self-attention over a [B, h, w, D] token grid, with the decomposed relative
// position bias of MViTv2 when use_rel_pos. `window` = the grid side it is built for (window size
// for windowed layers, g for global ones): rel_pos_{h,w} are [2 * window - 1, head_dim].
struct SamVisionAttentionImpl : torch::nn::Module {
  SamVisionAttentionImpl(const SamVisionConfig& cfg, std::int64_t window);
  torch::Tensor forward(const torch::Tensor& x);  // x: [B, h, w, D] -> [B, h, w, D]
  SamVisionConfig cfg;
  std::int64_t window;
  nn::Linear qkv{nullptr}, proj{nullptr};
  torch::Tensor rel_pos_h, rel_pos_w;
};
TORCH_MODULE(SamVisionAttention);

struct SamVisionLayerImpl : torch::nn::Module {
  SamVisionLayerImpl(const SamVisionConfig& cfg, std::int64_t window_size);
  torch::Tensor forward(const torch::Tensor& x);  // x: [B, g, g, D]
  std::int64_t window_size;  // 0 = global attention
  nn::LayerNorm layer_norm1{nullptr};
  SamVisionAttention attn{nullptr};
  nn::LayerNorm layer_norm2{nullptr};
  SamMLPBlock mlp{nullptr};
};
TORCH_MODULE(SamVisionLayer);

struct SamVisionNeckImpl : torch::nn::Module {
  explicit SamVisionNeckImpl(const SamVisionConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x);  // x: [B, g, g, D] -> [B, C_out, g, g]
  nn::Conv2d conv1{nullptr};
  SamLayerNorm2d layer_norm1{nullptr};
  nn::Conv2d conv2{nullptr};
  SamLayerNorm2d layer_norm2{nullptr};
};
TORCH_MODULE(SamVisionNeck);

struct SamVisionEncoderImpl : torch::nn::Module {
  explicit SamVisionEncoderImpl(const SamVisionConfig& cfg);

  // pixel_values: [B, C, S, S] (any float dtype, converted to the weights' dtype/device) ->
  // image embeddings [B, output_channels, g, g] in the weights' dtype.
  // Taps: "vision.hidden_state" i = 0..n_layers ([B, g, g, D]; 0 = patch embeddings + pos_embed,
  // i = output of layer i - 1; the neck is not applied), "vision.neck" (the output).
  torch::Tensor forward(const torch::Tensor& pixel_values, const nn::Tap& tap = {});

  torch::Dtype dtype() const { return patch_embed->projection->weight.scalar_type(); }

  SamVisionConfig cfg;
  SamPatchEmbeddings patch_embed{nullptr};
  torch::Tensor pos_embed;  // [1, g, g, D] (use_abs_pos)
  torch::nn::ModuleList layers{nullptr};
  std::vector<SamVisionLayer> layer_list;
  SamVisionNeck neck{nullptr};
};
TORCH_MODULE(SamVisionEncoder);

}  // namespace lli::models
