// Segment Anything mask decoder: two-way transformer between prompt tokens and image embedding,
// transposed-convolution upscaling, hypernetwork MLPs per mask token, IoU prediction head.
// Module tree = transformers' SamMaskDecoder state_dict under "mask_decoder.": iou_token,
// mask_tokens, transformer.{layers.N.{self_attn, layer_norm1, cross_attn_token_to_image,
// layer_norm2, mlp.{lin1, lin2}, layer_norm3, layer_norm4, cross_attn_image_to_token},
// final_attn_token_to_image, layer_norm_final_attn}, upscale_conv1, upscale_layer_norm,
// upscale_conv2, output_hypernetworks_mlps.N.{proj_in, layers.M, proj_out},
// iou_prediction_head.{proj_in, layers.M, proj_out}.
// Ref: transformers/models/sam/modeling_sam.py SamAttention, SamTwoWayAttentionBlock,
//      SamTwoWayTransformer, SamFeedForward, SamMaskDecoder; configuration_sam.py (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "models/config_json.h"
#include "models/sam_image_encoder.h"
#include "nn/activation.h"
#include "nn/layers.h"
#include "nn/tap.h"

namespace lli::models {

// Defaults = transformers' SamMaskDecoderConfig().
struct SamMaskDecoderConfig {
  std::int64_t hidden_size = 256;
  nn::Activation hidden_act = nn::Activation::relu;  // of the transformer MLP
  std::int64_t mlp_dim = 2048;
  std::int64_t num_hidden_layers = 2;
  std::int64_t num_attention_heads = 8;
  std::int64_t attention_downsample_rate = 2;
  std::int64_t num_multimask_outputs = 3;
  std::int64_t iou_head_depth = 3;
  std::int64_t iou_head_hidden_dim = 256;
  double layer_norm_eps = 1e-6;

  std::int64_t num_mask_tokens() const { return num_multimask_outputs + 1; }
};

SamMaskDecoderConfig parse_sam_mask_decoder_config(const ConfigReader& r);

// SamAttention: q/k/v projections to hidden / downsample_rate, heads, softmax(q k^T / sqrt(d)) v.
struct SamAttentionImpl : torch::nn::Module {
  SamAttentionImpl(std::int64_t hidden, std::int64_t n_head, std::int64_t downsample_rate);
  // query: [N, Lq, hidden], key/value: [N, Lk, hidden] -> [N, Lq, hidden]
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value);
  std::int64_t n_head, internal_dim;
  nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(SamAttention);

struct SamTwoWayAttentionBlockImpl : torch::nn::Module {
  SamTwoWayAttentionBlockImpl(const SamMaskDecoderConfig& cfg, bool skip_first_layer_pe);
  // queries: [N, T, C] (prompt tokens), keys: [N, HW, C] (image); query_pe = the initial tokens,
  // key_pe: [N, HW, C] image positional encoding. Updates both.
  void forward(torch::Tensor& queries, torch::Tensor& keys, const torch::Tensor& query_pe, const torch::Tensor& key_pe);
  bool skip_first_layer_pe;
  SamAttention self_attn{nullptr};
  nn::LayerNorm layer_norm1{nullptr};
  SamAttention cross_attn_token_to_image{nullptr};
  nn::LayerNorm layer_norm2{nullptr};
  SamMLPBlock mlp{nullptr};
  nn::LayerNorm layer_norm3{nullptr};
  nn::LayerNorm layer_norm4{nullptr};
  SamAttention cross_attn_image_to_token{nullptr};
};
TORCH_MODULE(SamTwoWayAttentionBlock);

struct SamTwoWayTransformerImpl : torch::nn::Module {
  explicit SamTwoWayTransformerImpl(const SamMaskDecoderConfig& cfg);
  // point_embeddings: [N, T, C]; image_embeddings, image_pe: [N, HW, C].
  // Returns {queries [N, T, C], keys [N, HW, C]}.
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& point_embeddings,
                                                  const torch::Tensor& image_embeddings, const torch::Tensor& image_pe);
  torch::nn::ModuleList layers{nullptr};
  std::vector<SamTwoWayAttentionBlock> layer_list;
  SamAttention final_attn_token_to_image{nullptr};
  nn::LayerNorm layer_norm_final_attn{nullptr};  // torch default eps 1e-5 (not the config's)
};
TORCH_MODULE(SamTwoWayTransformer);

// proj_in -> ReLU -> (layers.i -> ReLU)* -> proj_out (num_layers - 2 hidden layers).
struct SamFeedForwardImpl : torch::nn::Module {
  SamFeedForwardImpl(std::int64_t in, std::int64_t hidden, std::int64_t out, std::int64_t num_layers);
  torch::Tensor forward(const torch::Tensor& x);
  nn::Linear proj_in{nullptr}, proj_out{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<nn::Linear> layer_list;
};
TORCH_MODULE(SamFeedForward);

struct SamMaskDecoderOutput {
  torch::Tensor masks;       // [B, pb, m, 4g, 4g] low-res mask logits
  torch::Tensor iou_scores;  // [B, pb, m] predicted IoU
};

struct SamMaskDecoderImpl : torch::nn::Module {
  explicit SamMaskDecoderImpl(const SamMaskDecoderConfig& cfg);

  // image_embeddings: [B, C, g, g]; image_pe: [1 or B, C, g, g]; sparse: [B, pb, k, C] (k may be
  // 0: then only the output tokens go in, as the reference does for an all-zero sparse input);
  // dense: [B, C, g, g]. multimask: mask tokens 1..n (m = num_multimask_outputs), else token 0
  // (m = 1). Inputs are converted to the weights' dtype/device.
  // Taps: "decoder.queries", "decoder.keys" (transformer outputs), "decoder.upscaled".
  SamMaskDecoderOutput forward(const torch::Tensor& image_embeddings, const torch::Tensor& image_pe,
                               const torch::Tensor& sparse, const torch::Tensor& dense, bool multimask,
                               const nn::Tap& tap = {});
  // Every mask token's output (m = num_mask_tokens: token 0 = the single mask, then the multimask
  // ones): what forward() selects from, for callers that need both (training).
  SamMaskDecoderOutput forward_all(const torch::Tensor& image_embeddings, const torch::Tensor& image_pe,
                                   const torch::Tensor& sparse, const torch::Tensor& dense, const nn::Tap& tap = {});

  SamMaskDecoderConfig cfg;
  nn::Embedding iou_token{nullptr};    // [1, C]
  nn::Embedding mask_tokens{nullptr};  // [n_mask_tokens, C]
  SamTwoWayTransformer transformer{nullptr};
  nn::ConvTranspose2d upscale_conv1{nullptr};
  nn::ConvTranspose2d upscale_conv2{nullptr};
  SamLayerNorm2d upscale_layer_norm{nullptr};
  torch::nn::ModuleList output_hypernetworks_mlps{nullptr};
  std::vector<SamFeedForward> hypernetwork_list;
  SamFeedForward iou_prediction_head{nullptr};
};
TORCH_MODULE(SamMaskDecoder);

}  // namespace lli::models
