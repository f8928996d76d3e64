// Ref: diffusers/models/resnet.py ResnetBlock2D, downsampling.py Downsample2D, upsampling.py
// Upsample2D (v0.31).
#include "nn/resnet_block.h"

#include <string>

#include "lli/error.h"

namespace lli::nn {

Conv2dOptions conv2d_options(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride,
                             std::int64_t padding) {
  Conv2dOptions o;
  o.in = in;
  o.out = out;
  o.kernel = kernel;
  o.stride = stride;
  o.padding = padding;
  return o;
}

ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetBlock2DConfig& c) : cfg(c) {
  if (c.groups <= 0 || c.in_channels % c.groups != 0 || c.out_channels % c.groups != 0)
    throw ModelError("ResnetBlock2D: channels " + std::to_string(c.in_channels) + " -> " +
                     std::to_string(c.out_channels) + " are not divisible by norm_num_groups " +
                     std::to_string(c.groups));
  norm1 = register_module("norm1", GroupNorm(c.groups, c.in_channels, c.eps));
  conv1 = register_module("conv1", Conv2d(conv2d_options(c.in_channels, c.out_channels, 3, 1, 1)));
  if (c.temb_channels > 0) time_emb_proj = register_module("time_emb_proj", Linear(c.temb_channels, c.out_channels));
  norm2 = register_module("norm2", GroupNorm(c.groups, c.out_channels, c.eps));
  conv2 = register_module("conv2", Conv2d(conv2d_options(c.out_channels, c.out_channels, 3, 1, 1)));
  if (c.in_channels != c.out_channels)
    conv_shortcut = register_module("conv_shortcut", Conv2d(conv2d_options(c.in_channels, c.out_channels, 1, 1, 0)));
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  auto norm_act = [&](GroupNorm& n, const torch::Tensor& t) {
    return cfg.act == Activation::silu ? n->forward_silu(t) : apply_activation(n(t), cfg.act);
  };
  auto h = conv1(norm_act(norm1, x));  // [B, out, H, W]
  if (time_emb_proj && temb.defined()) {
    auto t = time_emb_proj(cfg.skip_time_act ? temb : apply_activation(temb, cfg.act));  // [B, out]
    h = h + t.unsqueeze(-1).unsqueeze(-1);
  }
  h = conv2(norm_act(norm2, h));
  auto shortcut = conv_shortcut ? conv_shortcut(x) : x;
  auto out = shortcut + h;
  if (cfg.output_scale_factor != 1.0) out = out / cfg.output_scale_factor;
  return out;
}

Downsample2DImpl::Downsample2DImpl(std::int64_t channels, std::int64_t out_channels, std::int64_t pad)
    : padding(pad) {
  conv = register_module("conv", Conv2d(conv2d_options(channels, out_channels, 3, 2, pad)));
}

torch::Tensor Downsample2DImpl::forward(const torch::Tensor& x) {
  if (padding == 0) return conv(torch::constant_pad_nd(x, {0, 1, 0, 1}, 0));  // right, bottom
  return conv(x);
}

Upsample2DImpl::Upsample2DImpl(std::int64_t channels, std::int64_t out_channels) {
  conv = register_module("conv", Conv2d(conv2d_options(channels, out_channels, 3, 1, 1)));
}

torch::Tensor Upsample2DImpl::forward(const torch::Tensor& x, const std::vector<std::int64_t>& size) {
  // Nearest neighbour: a copy, exact in any dtype (diffusers' bf16 -> fp32 -> bf16 round trip is
  // a no-op on the values).
  const std::vector<std::int64_t> out = size.empty() ? std::vector<std::int64_t>{2 * x.size(2), 2 * x.size(3)} : size;
  return conv(at::upsample_nearest2d(x, c10::IntArrayRef(out), c10::nullopt, c10::nullopt));
}

}  // namespace lli::nn
