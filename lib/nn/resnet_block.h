// diffusers ResnetBlock2D (time embedding optional: the VAE has none), Downsample2D, Upsample2D.
// Registered names follow the diffusers state_dict: norm1, conv1, time_emb_proj, norm2, conv2,
// conv_shortcut; Downsample2D / Upsample2D hold one `conv`.
// Ref: diffusers/models/resnet.py ResnetBlock2D, downsampling.py Downsample2D, upsampling.py
// Upsample2D (v0.31).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "nn/activation.h"
#include "nn/layers.h"

namespace lli::nn {

// Conv2dOptions in one call (groups 1, dilation 1, with bias), for the diffusers blocks.
Conv2dOptions conv2d_options(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride = 1,
                             std::int64_t padding = 0);

struct ResnetBlock2DConfig {
  std::int64_t in_channels = 0;
  std::int64_t out_channels = 0;
  std::int64_t temb_channels = 0;  // 0: no time embedding (VAE)
  std::int64_t groups = 32;        // GroupNorm groups of norm1 and norm2
  double eps = 1e-5;
  Activation act = Activation::silu;
  double output_scale_factor = 1.0;
  bool skip_time_act = false;  // true: the time embedding is projected without the activation
};

// time_embedding_norm "default" (the embedding is added after conv1); a 1x1 conv_shortcut when
// in_channels != out_channels.
struct ResnetBlock2DImpl : torch::nn::Module {
  explicit ResnetBlock2DImpl(const ResnetBlock2DConfig& cfg);
  // x: [B, in, H, W]; temb: [B, temb_channels] or undefined (no time embedding) -> [B, out, H, W]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb = {});

  ResnetBlock2DConfig cfg;
  GroupNorm norm1{nullptr};
  Conv2d conv1{nullptr};
  Linear time_emb_proj{nullptr};
  GroupNorm norm2{nullptr};
  Conv2d conv2{nullptr};
  Conv2d conv_shortcut{nullptr};
};
TORCH_MODULE(ResnetBlock2D);

// 3x3 stride-2 convolution. padding 0 (the VAE): the input is first padded by one zero column on
// the right and one zero row at the bottom, as diffusers does.
struct Downsample2DImpl : torch::nn::Module {
  Downsample2DImpl(std::int64_t channels, std::int64_t out_channels, std::int64_t padding);
  torch::Tensor forward(const torch::Tensor& x);  // x: [B, C, H, W] -> [B, out, ceil(H/2), ceil(W/2)]
  std::int64_t padding;
  Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

// Nearest-neighbour upsampling (x2, or to `size`) followed by a 3x3 convolution.
struct Upsample2DImpl : torch::nn::Module {
  Upsample2DImpl(std::int64_t channels, std::int64_t out_channels);
  // x: [B, C, H, W] -> [B, out, 2H, 2W], or [B, out, size[0], size[1]] when size = {h, w} is given
  torch::Tensor forward(const torch::Tensor& x, const std::vector<std::int64_t>& size = {});
  Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

}  // namespace lli::nn
