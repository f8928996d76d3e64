// Stable Diffusion UNet (diffusers UNet2DConditionModel) with GLIGEN grounding: unet/config.json +
// diffusion_pytorch_model[.fp16].safetensors (or a sharded index). Module tree = the diffusers
// state_dict: time_embedding.{linear_1, linear_2}, conv_in, down_blocks.N.{resnets, attentions,
// downsamplers}, mid_block.{resnets, attentions}, up_blocks.N.{resnets, attentions, upsamplers},
// conv_norm_out, conv_out, and for GLIGEN position_net.* plus a `fuser` in every transformer block.
// Block types: CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D /
// CrossAttnUpBlock2D; inpainting UNets are the same with in_channels = 9.
// Ref: diffusers/models/unets/unet_2d_condition.py UNet2DConditionModel, unet_2d_blocks.py,
// embeddings.py get_timestep_embedding / TimestepEmbedding (v0.31).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "lli/safetensors.h"
#include "models/config_json.h"
#include "models/gligen_position_net.h"
#include "nn/activation.h"
#include "nn/layers.h"
#include "nn/resnet_block.h"
#include "nn/tap.h"
#include "nn/transformer_2d.h"

namespace lli::models {

// Per-block values are expanded to one entry per level (block_out_channels order); the up path
// uses them reversed, as diffusers does.
struct UNetConfig {
  std::int64_t in_channels = 4;   // 4: generation, 9: inpainting
  std::int64_t out_channels = 4;
  std::int64_t sample_size = 64;  // latent side the model was trained at (informational)
  bool center_input_sample = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  std::vector<bool> down_cross_attention;  // CrossAttnDownBlock2D (true) / DownBlock2D (false)
  std::vector<bool> up_cross_attention;    // CrossAttnUpBlock2D (true) / UpBlock2D (false), up order
  std::vector<std::int64_t> block_out_channels = {320, 640, 1280, 1280};
  std::vector<std::int64_t> layers_per_block;              // per level
  std::vector<bool> only_cross_attention;                  // per level
  std::vector<std::int64_t> num_attention_heads;           // per level (see load: the head-dim quirk)
  std::vector<std::int64_t> cross_attention_dims;          // per level
  std::vector<std::int64_t> transformer_layers_per_block;  // per level
  std::int64_t cross_attention_dim = 1280;  // width of encoder_hidden_states (first level's)
  std::int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1;
  nn::Activation act_fn = nn::Activation::silu;
  std::int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  bool use_linear_projection = false;
  bool upcast_attention = false;
  std::int64_t conv_in_kernel = 3;
  std::int64_t conv_out_kernel = 3;
  std::int64_t time_embed_dim = 1280;  // time_embedding_dim, or 4 * block_out_channels[0]
  std::optional<nn::Activation> time_embedding_act_fn;  // applied to the time embedding
  std::optional<nn::Activation> timestep_post_act;      // TimestepEmbedding's post activation
  bool resnet_skip_time_act = false;
  double resnet_out_scale_factor = 1.0;
  bool gated_attention = false;  // config attention_type "gated" (GLIGEN, text-only grounding)
  // GLIGEN weights present (fuser in every transformer block + position_net): set by load_unet
  // from the checkpoint's keys; a "gated" config whose checkpoint has none loads as plain SD.
  bool gligen = false;
  GLIGENPositionNetConfig position_net;  // positive_len = out_dim = cross_attention_dim

  std::int64_t n_level() const { return static_cast<std::int64_t>(block_out_channels.size()); }
};

// Parses a UNet2DConditionModel config. ModelError naming the key for a wrong value, and for every
// key that selects a feature not implemented here (class / addition embeddings, encoder_hid_dim,
// time_cond_proj_dim, dual cross attention, other block types, ...).
UNetConfig parse_unet_config(const nlohmann::json& j, const std::string& source);
UNetConfig load_unet_config(const std::filesystem::path& dir);  // <dir>/config.json

// Helpers shared by the diffusers models (UNet, VAE):
// A diffusers model folder's weights: diffusion_pytorch_model.safetensors, its sharded index
// (diffusion_pytorch_model.safetensors.index.json), else the fp16 variant
// (diffusion_pytorch_model.fp16.safetensors / diffusion_pytorch_model.safetensors.index.fp16.json).
st::Checkpoint open_diffusers_checkpoint(const std::filesystem::path& dir);
// `block_out_channels`: a non-empty list of positive integers (def when absent).
std::vector<std::int64_t> parse_block_out_channels(const ConfigReader& r, const std::vector<std::int64_t>& def);
// ModelError "<what>: ..." unless dtype is f32 or bf16, or f16 on a non-CPU device.
void check_compute_dtype(const std::string& what, torch::Dtype dtype, const torch::Device& device);

struct UNetLoadOptions {
  torch::Dtype dtype = torch::kFloat32;  // kFloat32 or kBFloat16 (fp16 only on CUDA)
  torch::Device device = torch::kCPU;
  // Query rows per attention chunk (bounds the [B, heads, chunk, keys] scores; same results).
  // 0: all rows at once.
  std::int64_t attention_q_chunk = 1024;
};

// Sinusoidal time projection (get_timestep_embedding, scale 1, max_period 10000): t [B] ->
// [B, dim] fp32.
torch::Tensor timestep_embedding(const torch::Tensor& t, std::int64_t dim, bool flip_sin_to_cos, double freq_shift);

struct TimestepEmbeddingImpl : torch::nn::Module {
  TimestepEmbeddingImpl(std::int64_t in, std::int64_t dim, nn::Activation act, std::optional<nn::Activation> post_act);
  torch::Tensor forward(const torch::Tensor& t_emb);  // [B, in] -> [B, dim]
  nn::Activation act;
  std::optional<nn::Activation> post_act;
  nn::Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

// What every block's forward needs besides the feature map.
struct UNetBlockInputs {
  torch::Tensor temb;     // [B, time_embed_dim]
  torch::Tensor context;  // [B, L, cross_attention_dim]
  torch::Tensor objs;     // GLIGEN grounding tokens or undefined
  nn::Tap tap;            // passed to the transformers (the fusers' "fuser.scores")
};

// CrossAttnDownBlock2D (with attentions) / DownBlock2D.
struct UNetDownBlockImpl : torch::nn::Module {
  UNetDownBlockImpl(const UNetConfig& cfg, std::int64_t level, std::int64_t q_chunk);
  // x: [B, C_in, H, W] -> [B, C_out, H', W']; appends every output state to `skips`.
  torch::Tensor forward(const torch::Tensor& x, const UNetBlockInputs& in, std::vector<torch::Tensor>& skips);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, downsamplers{nullptr};
  std::vector<nn::ResnetBlock2D> resnet_list;
  std::vector<nn::Transformer2DModel> attention_list;
  nn::Downsample2D downsampler{nullptr};
};
TORCH_MODULE(UNetDownBlock);

// UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet) pairs.
struct UNetMidBlockImpl : torch::nn::Module {
  UNetMidBlockImpl(const UNetConfig& cfg, std::int64_t q_chunk);
  torch::Tensor forward(const torch::Tensor& x, const UNetBlockInputs& in);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
  std::vector<nn::ResnetBlock2D> resnet_list;
  std::vector<nn::Transformer2DModel> attention_list;
};
TORCH_MODULE(UNetMidBlock);

// CrossAttnUpBlock2D / UpBlock2D (up_index 0 = the deepest level).
struct UNetUpBlockImpl : torch::nn::Module {
  UNetUpBlockImpl(const UNetConfig& cfg, std::int64_t up_index, std::int64_t q_chunk);
  // Consumes one skip state per resnet from the back of `skips`; upsamples to the size of the
  // next remaining skip state (the up path's target size, as diffusers' upsample_size).
  torch::Tensor forward(const torch::Tensor& x, const UNetBlockInputs& in, std::vector<torch::Tensor>& skips);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, upsamplers{nullptr};
  std::vector<nn::ResnetBlock2D> resnet_list;
  std::vector<nn::Transformer2DModel> attention_list;
  nn::Upsample2D upsampler{nullptr};
};
TORCH_MODULE(UNetUpBlock);

struct UNet2DConditionModelImpl : torch::nn::Module {
  explicit UNet2DConditionModelImpl(const UNetConfig& cfg, std::int64_t attention_q_chunk = 0);

  bool has_gligen() const { return cfg.gligen; }  // fuser + position_net present

  // GLIGEN grounding tokens: boxes [B, N, 4] xyxy in 0..1, masks [B, N] (1 = real object),
  // positive_embeddings [B, N, positive_len] -> objs [B, N, cross_attention_dim] fp32.
  // RuntimeError when the model has no GLIGEN weights.
  torch::Tensor position_net_forward(const torch::Tensor& boxes, const torch::Tensor& masks,
                                     const torch::Tensor& positive_embeddings);

  // sample [B, in_channels, h, w]; timestep: one value for the whole batch (integer for PNDM/DDIM,
  // fractional for Euler), projected in fp32 as diffusers does; encoder_hidden_states
  // [B, L, cross_attention_dim]; objs: grounding tokens from position_net_forward, or undefined =
  // fuser not applied (plain SD, or GLIGEN after its scheduled-sampling steps). Inputs of any
  // float dtype are converted to the weights'. Returns [B, out_channels, h, w] fp32.
  // Taps: "unet.time_emb", "unet.conv_in", "unet.down" (level), "unet.mid", "unet.up" (index),
  // "unet.out", and every fuser's "fuser.scores" (nn/transformer_2d.h; only with objs).
  torch::Tensor forward(const torch::Tensor& sample, double timestep, const torch::Tensor& encoder_hidden_states,
                        const torch::Tensor& objs = {}, const nn::Tap& tap = {});
  // The same with one timestep per batch row: timesteps [B] (training draws one per sample).
  torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timesteps,
                        const torch::Tensor& encoder_hidden_states, const torch::Tensor& objs = {},
                        const nn::Tap& tap = {});

  torch::Dtype dtype() const { return conv_in->weight.scalar_type(); }
  torch::Device device() const { return conv_in->weight.device(); }

  UNetConfig cfg;
  TimestepEmbedding time_embedding{nullptr};
  nn::Conv2d conv_in{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  std::vector<UNetDownBlock> down_list;
  UNetMidBlock mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  std::vector<UNetUpBlock> up_list;
  nn::GroupNorm conv_norm_out{nullptr};
  nn::Conv2d conv_out{nullptr};
  GLIGENPositionNet position_net{nullptr};
};
TORCH_MODULE(UNet2DConditionModel);

// Loads <dir>/config.json and the weights strictly (every missing / unexpected key and shape
// mismatch reported together), converted to opts.dtype; the GLIGEN position net stays fp32.
UNet2DConditionModel load_unet(const std::filesystem::path& dir, const UNetLoadOptions& opts = {});

}  // namespace lli::models
