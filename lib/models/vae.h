// Stable Diffusion VAE (diffusers AutoencoderKL): vae/config.json +
// diffusion_pytorch_model[.fp16].safetensors. Module tree = the diffusers state_dict:
// encoder.{conv_in, down_blocks.N.{resnets, downsamplers}, mid_block.{resnets, attentions},
// conv_norm_out, conv_out}, quant_conv, post_quant_conv, decoder.{conv_in, mid_block,
// up_blocks.N.{resnets, upsamplers}, conv_norm_out, conv_out}. Any number of levels.
// encode returns the diagonal Gaussian posterior (logvar clamped to [-30, 20]); decode returns the
// raw sample (not clamped). Tiled encode/decode reproduce diffusers' enable_tiling(): tiles of
// sample_size pixels (sample_size / 2^(levels-1) latents) with an overlap factor of 0.25, blended
// linearly over the overlap (blend_v, then blend_h, in place, row by row).
// Ref: diffusers/models/autoencoders/autoencoder_kl.py AutoencoderKL, vae.py Encoder / Decoder /
// DiagonalGaussianDistribution, unet_2d_blocks.py DownEncoderBlock2D / UpDecoderBlock2D /
// UNetMidBlock2D (v0.31).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "models/config_json.h"
#include "nn/activation.h"
#include "nn/diffusers_attention.h"
#include "nn/layers.h"
#include "nn/resnet_block.h"
#include "nn/tap.h"

namespace lli::models {

// Defaults = diffusers AutoencoderKL() where the config leaves a key out.
struct VAEConfig {
  std::int64_t in_channels = 3;
  std::int64_t out_channels = 3;
  std::int64_t latent_channels = 4;
  std::vector<std::int64_t> block_out_channels = {64};
  std::int64_t layers_per_block = 1;
  nn::Activation act_fn = nn::Activation::silu;
  std::int64_t norm_num_groups = 32;
  std::int64_t sample_size = 32;  // pixels; the tile size of tiled encode/decode
  double scaling_factor = 0.18215;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;

  std::int64_t n_level() const { return static_cast<std::int64_t>(block_out_channels.size()); }
  std::int64_t scale_factor() const { return std::int64_t{1} << (n_level() - 1); }  // pixels per latent
};

VAEConfig parse_vae_config(const nlohmann::json& j, const std::string& source);
VAEConfig load_vae_config(const std::filesystem::path& dir);  // <dir>/config.json

// diffusers' enable_tiling(): used when the input is larger than one tile.
struct VAETiling {
  bool enabled = false;
  std::int64_t tile_sample_min_size = 0;  // pixels; 0 = config sample_size
  std::int64_t tile_latent_min_size = 0;  // latents; 0 = int(sample_size / 2^(levels-1))
  double tile_overlap_factor = 0.25;
};

struct VAEPosterior {
  torch::Tensor mean, logvar, std;  // [B, latent_channels, h, w] fp32; logvar clamped to [-30, 20]
};

// UNetMidBlock2D as the VAE uses it: resnet, (attention, resnet); no time embedding.
struct VAEMidBlockImpl : torch::nn::Module {
  VAEMidBlockImpl(const VAEConfig& cfg, std::int64_t channels, std::int64_t q_chunk);
  torch::Tensor forward(const torch::Tensor& x);  // [B, C, H, W] -> same
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
  std::vector<nn::ResnetBlock2D> resnet_list;
  nn::DiffusersAttention attention{nullptr};  // absent with mid_block_add_attention = false
};
TORCH_MODULE(VAEMidBlock);

// DownEncoderBlock2D (downsamplers: padding 0 = pad right/bottom then stride 2) or
// UpDecoderBlock2D (upsamplers: nearest x2 + conv).
struct VAEBlockImpl : torch::nn::Module {
  VAEBlockImpl(const VAEConfig& cfg, std::int64_t in, std::int64_t out, std::int64_t n_layer, bool down, bool resample);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::ModuleList resnets{nullptr}, samplers{nullptr};
  std::vector<nn::ResnetBlock2D> resnet_list;
  nn::Downsample2D downsampler{nullptr};
  nn::Upsample2D upsampler{nullptr};
};
TORCH_MODULE(VAEBlock);

struct VAEEncoderImpl : torch::nn::Module {
  VAEEncoderImpl(const VAEConfig& cfg, std::int64_t q_chunk);
  torch::Tensor forward(const torch::Tensor& x);  // [B, in, H, W] -> [B, 2 latent, H/f, W/f]
  VAEConfig cfg;
  nn::Conv2d conv_in{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  std::vector<VAEBlock> down_list;
  VAEMidBlock mid_block{nullptr};
  nn::GroupNorm conv_norm_out{nullptr};
  nn::Conv2d conv_out{nullptr};
};
TORCH_MODULE(VAEEncoder);

struct VAEDecoderImpl : torch::nn::Module {
  VAEDecoderImpl(const VAEConfig& cfg, std::int64_t q_chunk);
  torch::Tensor forward(const torch::Tensor& z);  // [B, latent, h, w] -> [B, out, h f, w f]
  VAEConfig cfg;
  nn::Conv2d conv_in{nullptr};
  VAEMidBlock mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  std::vector<VAEBlock> up_list;
  nn::GroupNorm conv_norm_out{nullptr};
  nn::Conv2d conv_out{nullptr};
};
TORCH_MODULE(VAEDecoder);

struct AutoencoderKLImpl : torch::nn::Module {
  explicit AutoencoderKLImpl(const VAEConfig& cfg, std::int64_t attention_q_chunk = 0);

  // x: [B, in_channels, H, W] in [-1, 1] (any float dtype) -> posterior [B, latent, H/f, W/f] fp32.
  VAEPosterior encode(const torch::Tensor& x, const VAETiling& tiling = {});
  // z: [B, latent_channels, h, w], already divided by scaling_factor -> [B, out_channels, h f, w f]
  // fp32, not clamped.
  torch::Tensor decode(const torch::Tensor& z, const VAETiling& tiling = {});

  torch::Dtype dtype() const { return decoder->conv_in->weight.scalar_type(); }
  torch::Device device() const { return decoder->conv_in->weight.device(); }

  VAEConfig cfg;
  VAEEncoder encoder{nullptr};
  VAEDecoder decoder{nullptr};
  nn::Conv2d quant_conv{nullptr};       // 2 latent -> 2 latent, 1x1 (use_quant_conv)
  nn::Conv2d post_quant_conv{nullptr};  // latent -> latent, 1x1 (use_post_quant_conv)

 private:
  torch::Tensor encode_moments(const torch::Tensor& x);  // encoder + quant_conv, weights' dtype
  torch::Tensor decode_sample(const torch::Tensor& z);   // post_quant_conv + decoder, weights' dtype
};
TORCH_MODULE(AutoencoderKL);

struct VAELoadOptions {
  torch::Dtype dtype = torch::kFloat32;  // kFloat32 or kBFloat16 (fp16 only on CUDA)
  torch::Device device = torch::kCPU;
  std::int64_t attention_q_chunk = 1024;  // mid-block attention query chunk (0 = none)
};

// Strict load of <dir>/config.json and the weights (see open_diffusers_checkpoint in unet.h).
AutoencoderKL load_vae(const std::filesystem::path& dir, const VAELoadOptions& opts = {});

}  // namespace lli::models
