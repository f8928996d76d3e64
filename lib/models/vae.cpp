// Ref: diffusers/models/autoencoders/autoencoder_kl.py AutoencoderKL (_encode, _decode,
// _tiled_encode, tiled_decode, blend_v, blend_h), vae.py Encoder / Decoder /
// DiagonalGaussianDistribution, unet_2d_blocks.py DownEncoderBlock2D / UpDecoderBlock2D /
// UNetMidBlock2D (v0.31).
#include "models/vae.h"
#include "nn/grad_mode.h"

#include <algorithm>
#include <functional>
#include <string>

#include "lli/error.h"
#include "lli/log.h"
#include "lli/tensor_io.h"
#include "nn/group_norm_bf16.h"
#include "models/unet.h"  // open_diffusers_checkpoint, parse_block_out_channels, check_compute_dtype

namespace lli::models {

namespace {

constexpr double kVAEEps = 1e-6;  // resnet_eps and the norms' epsilon in Encoder / Decoder

nn::ResnetBlock2DConfig vae_resnet(const VAEConfig& c, std::int64_t in, std::int64_t out) {
  nn::ResnetBlock2DConfig rc;
  rc.in_channels = in;
  rc.out_channels = out;
  rc.temb_channels = 0;
  rc.groups = c.norm_num_groups;
  rc.eps = kVAEEps;
  rc.act = c.act_fn;
  return rc;
}

void require_null(const ConfigReader& r, const std::string& key, const std::string& why) {
  if (r.has(key))
    throw ModelError(r.where(key) + ": " + r.at(key).dump() + " is not supported (only null: " + why + ")");
}

// The weights of diffusers' blend_v / blend_h over `extent` rows: new = a * (1 - y / e) + b * (y / e),
// the scalars rounded to fp32 as Python floats multiply an fp32 tensor.
std::pair<torch::Tensor, torch::Tensor> blend_weights(std::int64_t extent, const torch::Tensor& like) {
  std::vector<float> wa(static_cast<std::size_t>(extent)), wb(static_cast<std::size_t>(extent));
  for (std::int64_t y = 0; y < extent; ++y) {
    const double f = static_cast<double>(y) / static_cast<double>(extent);
    wa[static_cast<std::size_t>(y)] = static_cast<float>(1.0 - f);
    wb[static_cast<std::size_t>(y)] = static_cast<float>(f);
  }
  auto o = torch::TensorOptions().dtype(torch::kFloat32);
  return {torch::tensor(wa, o).to(like.device(), like.scalar_type()), torch::tensor(wb, o).to(like.device(), like.scalar_type())};
}

// b's first rows (dim 2) or columns (dim 3) blended in place with a's last ones.
void blend(const torch::Tensor& a, torch::Tensor& b, std::int64_t extent, std::int64_t dim) {
  extent = std::min({a.size(dim), b.size(dim), extent});
  if (extent <= 0) return;
  auto [wa, wb] = blend_weights(extent, b);
  std::vector<std::int64_t> shape(4, 1);
  shape[static_cast<std::size_t>(dim)] = extent;
  wa = wa.view(shape);
  wb = wb.view(shape);
  auto head = b.narrow(dim, 0, extent);
  head.copy_(a.narrow(dim, a.size(dim) - extent, extent) * wa + head * wb);
}

// diffusers' tiled procedure (_tiled_encode / tiled_decode): tiles of tile_in x tile_in input
// pixels every (1 - overlap) * tile_in, each run through `run` (-> tile_out x tile_out, fp32);
// each output tile blended with the (already blended) tile above, then the one to its left, over
// overlap * tile_out rows / columns, cropped to (1 - overlap) * tile_out, and the crops joined.
torch::Tensor tiled(const torch::Tensor& x, std::int64_t tile_in, std::int64_t tile_out, double overlap_factor,
                    const std::function<torch::Tensor(const torch::Tensor&)>& run) {
  const auto stride = static_cast<std::int64_t>(static_cast<double>(tile_in) * (1 - overlap_factor));
  const auto extent = static_cast<std::int64_t>(static_cast<double>(tile_out) * overlap_factor);
  const auto limit = tile_out - extent;
  if (stride <= 0 || limit <= 0)
    throw RuntimeError("VAE tiling: tile " + std::to_string(tile_in) + " with overlap factor " +
                       std::to_string(overlap_factor) + " leaves no stride");
  std::vector<std::vector<torch::Tensor>> rows;
  for (std::int64_t i = 0; i < x.size(2); i += stride) {
    std::vector<torch::Tensor> row;
    for (std::int64_t j = 0; j < x.size(3); j += stride)
      row.push_back(run(x.narrow(2, i, std::min(tile_in, x.size(2) - i)).narrow(3, j, std::min(tile_in, x.size(3) - j)))
                        .to(torch::kFloat32));
    rows.push_back(std::move(row));
  }
  std::vector<torch::Tensor> out_rows;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::vector<torch::Tensor> out_row;
    for (std::size_t j = 0; j < rows[i].size(); ++j) {
      auto& tile = rows[i][j];
      if (i > 0) blend(rows[i - 1][j], tile, extent, 2);
      if (j > 0) blend(rows[i][j - 1], tile, extent, 3);
      out_row.push_back(tile.narrow(2, 0, std::min(limit, tile.size(2))).narrow(3, 0, std::min(limit, tile.size(3))));
    }
    out_rows.push_back(torch::cat(out_row, 3));
  }
  return torch::cat(out_rows, 2);
}

}  // namespace

VAEConfig parse_vae_config(const nlohmann::json& j, const std::string& source) {
  ConfigReader r(j, source);
  const std::string cls = r.get_string("_class_name", "AutoencoderKL");
  if (cls != "AutoencoderKL") throw ModelError(r.where("_class_name") + ": \"" + cls + "\" is not an AutoencoderKL");
  require_null(r, "shift_factor", "latents are only divided by scaling_factor");
  require_null(r, "latents_mean", "latents are only divided by scaling_factor");
  require_null(r, "latents_std", "latents are only divided by scaling_factor");

  VAEConfig c;
  c.in_channels = r.get_int("in_channels", c.in_channels);
  c.out_channels = r.get_int("out_channels", c.out_channels);
  c.latent_channels = r.get_int("latent_channels", c.latent_channels);
  c.block_out_channels = parse_block_out_channels(r, c.block_out_channels);
  const auto n = c.block_out_channels.size();
  for (const auto& [key, want] : {std::pair<std::string, std::string>{"down_block_types", "DownEncoderBlock2D"},
                                  {"up_block_types", "UpDecoderBlock2D"}}) {
    if (!r.has(key)) continue;
    const auto& v = r.at(key);
    if (!v.is_array() || v.size() != n)
      throw ModelError(r.where(key) + ": expected " + std::to_string(n) + " block types (one per block_out_channels), got " + v.dump());
    for (const auto& t : v)
      if (!t.is_string() || t.get<std::string>() != want)
        throw ModelError(r.where(key) + ": " + t.dump() + " is not supported (only \"" + want + "\")");
  }
  c.layers_per_block = r.get_int("layers_per_block", c.layers_per_block);
  c.act_fn = nn::parse_activation(r.get_string("act_fn", "silu"), r.where("act_fn"));
  c.norm_num_groups = r.get_int("norm_num_groups", c.norm_num_groups);
  if (r.has("sample_size") && r.at("sample_size").is_array()) {
    const auto& v = r.at("sample_size");
    if (v.empty() || !v[0].is_number_integer()) throw ModelError(r.where("sample_size") + ": expected an integer");
    c.sample_size = v[0].get<std::int64_t>();  // diffusers takes the first entry for the latent tile
  } else {
    c.sample_size = r.get_int("sample_size", c.sample_size);
  }
  c.scaling_factor = r.get_double("scaling_factor", c.scaling_factor);
  c.use_quant_conv = r.get_bool("use_quant_conv", true);
  c.use_post_quant_conv = r.get_bool("use_post_quant_conv", true);
  c.mid_block_add_attention = r.get_bool("mid_block_add_attention", true);

  for (auto k : {"in_channels", "out_channels", "latent_channels", "layers_per_block", "norm_num_groups", "sample_size"})
    r.require_positive(k, r.get_int(k, 1));
  if (c.scaling_factor <= 0)
    throw ModelError(r.where("scaling_factor") + ": must be positive, got " + std::to_string(c.scaling_factor));
  for (std::size_t i = 0; i < n; ++i)
    if (c.block_out_channels[i] % c.norm_num_groups != 0)
      throw ModelError(r.where("norm_num_groups") + ": block_out_channels[" + std::to_string(i) + "] = " +
                       std::to_string(c.block_out_channels[i]) + " is not divisible by " +
                       std::to_string(c.norm_num_groups));
  return c;
}

VAEConfig load_vae_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  return parse_vae_config(read_json_file(path), path.string());
}

VAEMidBlockImpl::VAEMidBlockImpl(const VAEConfig& c, std::int64_t ch, std::int64_t q_chunk) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  resnet_list.push_back(nn::ResnetBlock2D(vae_resnet(c, ch, ch)));
  resnets->push_back(resnet_list.back());
  if (c.mid_block_add_attention) {
    // attention_head_dim = channels: one head; group_norm first, residual, fp32 softmax.
    nn::DiffusersAttentionConfig a;
    a.query_dim = ch;
    a.heads = 1;
    a.dim_head = ch;
    a.bias = true;
    a.out_bias = true;
    a.upcast_softmax = true;
    a.norm_num_groups = c.norm_num_groups;
    a.eps = kVAEEps;
    a.residual_connection = true;
    a.rescale_output_factor = 1.0;
    a.q_chunk = q_chunk;
    attentions = register_module("attentions", torch::nn::ModuleList());
    attention = nn::DiffusersAttention(a);
    attentions->push_back(attention);
  }
  resnet_list.push_back(nn::ResnetBlock2D(vae_resnet(c, ch, ch)));
  resnets->push_back(resnet_list.back());
}

torch::Tensor VAEMidBlockImpl::forward(const torch::Tensor& x) {
  auto h = resnet_list[0](x);
  if (attention) h = attention(h);
  return resnet_list[1](h);
}

VAEBlockImpl::VAEBlockImpl(const VAEConfig& c, std::int64_t in, std::int64_t out, std::int64_t n_layer, bool down,
                           bool resample) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (std::int64_t l = 0; l < n_layer; ++l) {
    resnet_list.push_back(nn::ResnetBlock2D(vae_resnet(c, l == 0 ? in : out, out)));
    resnets->push_back(resnet_list.back());
  }
  if (!resample) return;
  samplers = register_module(down ? "downsamplers" : "upsamplers", torch::nn::ModuleList());
  if (down) {
    downsampler = nn::Downsample2D(out, out, /*padding=*/0);
    samplers->push_back(downsampler);
  } else {
    upsampler = nn::Upsample2D(out, out);
    samplers->push_back(upsampler);
  }
}

torch::Tensor VAEBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = x;
  for (auto& r : resnet_list) h = r(h);
  if (downsampler) h = downsampler(h);
  if (upsampler) h = upsampler(h);
  return h;
}

VAEEncoderImpl::VAEEncoderImpl(const VAEConfig& c, std::int64_t q_chunk) : cfg(c) {
  const auto& ch = c.block_out_channels;
  conv_in = register_module("conv_in", nn::Conv2d(nn::conv2d_options(c.in_channels, ch[0], 3, 1, 1)));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.n_level(); ++i) {
    const auto in = ch[static_cast<std::size_t>(std::max<std::int64_t>(i - 1, 0))];
    const auto out = ch[static_cast<std::size_t>(i)];
    down_list.push_back(VAEBlock(c, in, out, c.layers_per_block, /*down=*/true, /*resample=*/i + 1 < c.n_level()));
    down_blocks->push_back(down_list.back());
  }
  mid_block = register_module("mid_block", VAEMidBlock(c, ch.back(), q_chunk));
  conv_norm_out = register_module("conv_norm_out", nn::GroupNorm(c.norm_num_groups, ch.back(), kVAEEps));
  conv_out = register_module("conv_out", nn::Conv2d(nn::conv2d_options(ch.back(), 2 * c.latent_channels, 3, 1, 1)));  // double_z
}

torch::Tensor VAEEncoderImpl::forward(const torch::Tensor& x) {
  auto h = conv_in(nn::prefer_channels_last(x));  // channels-last on the bf16 CPU path
  for (auto& b : down_list) h = b(h);
  h = mid_block(h);
  return conv_out(conv_norm_out->forward_silu(h)).contiguous();  // conv_act is nn.SiLU whatever act_fn is
}

VAEDecoderImpl::VAEDecoderImpl(const VAEConfig& c, std::int64_t q_chunk) : cfg(c) {
  const auto& ch = c.block_out_channels;
  conv_in = register_module("conv_in", nn::Conv2d(nn::conv2d_options(c.latent_channels, ch.back(), 3, 1, 1)));
  mid_block = register_module("mid_block", VAEMidBlock(c, ch.back(), q_chunk));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  const auto n = c.n_level();
  for (std::int64_t i = 0; i < n; ++i) {
    const auto prev = ch[static_cast<std::size_t>(std::min(n - i, n - 1))];  // previous block's output
    const auto out = ch[static_cast<std::size_t>(n - 1 - i)];
    up_list.push_back(VAEBlock(c, prev, out, c.layers_per_block + 1, /*down=*/false, /*resample=*/i + 1 < n));
    up_blocks->push_back(up_list.back());
  }
  conv_norm_out = register_module("conv_norm_out", nn::GroupNorm(c.norm_num_groups, ch[0], kVAEEps));
  conv_out = register_module("conv_out", nn::Conv2d(nn::conv2d_options(ch[0], c.out_channels, 3, 1, 1)));
}

torch::Tensor VAEDecoderImpl::forward(const torch::Tensor& z) {
  auto h = mid_block(conv_in(nn::prefer_channels_last(z)));  // channels-last on the bf16 CPU path
  for (auto& b : up_list) h = b(h);
  return conv_out(conv_norm_out->forward_silu(h)).contiguous();
}

AutoencoderKLImpl::AutoencoderKLImpl(const VAEConfig& c, std::int64_t q_chunk) : cfg(c) {
  encoder = register_module("encoder", VAEEncoder(c, q_chunk));
  decoder = register_module("decoder", VAEDecoder(c, q_chunk));
  if (c.use_quant_conv) quant_conv = register_module("quant_conv", nn::Conv2d(nn::conv2d_options(2 * c.latent_channels, 2 * c.latent_channels, 1)));
  if (c.use_post_quant_conv) post_quant_conv = register_module("post_quant_conv", nn::Conv2d(nn::conv2d_options(c.latent_channels, c.latent_channels, 1)));
}

torch::Tensor AutoencoderKLImpl::encode_moments(const torch::Tensor& x) {
  auto h = encoder(x);
  return quant_conv ? quant_conv(h) : h;
}

torch::Tensor AutoencoderKLImpl::decode_sample(const torch::Tensor& z) {
  return decoder(post_quant_conv ? post_quant_conv(z) : z);
}

VAEPosterior AutoencoderKLImpl::encode(const torch::Tensor& x, const VAETiling& tiling) {
  nn::ForwardGuard no_grad;
  if (x.dim() != 4 || x.size(1) != cfg.in_channels)
    throw InputError("VAE encode: input has shape " + c10::str(x.sizes()) + ", expected [B, " +
                     std::to_string(cfg.in_channels) + ", H, W]");
  auto xx = x.to(device(), dtype());
  const auto tile = tiling.tile_sample_min_size > 0 ? tiling.tile_sample_min_size : cfg.sample_size;
  torch::Tensor moments;
  if (tiling.enabled && (xx.size(2) > tile || xx.size(3) > tile)) {
    const auto latent_tile = tiling.tile_latent_min_size > 0 ? tiling.tile_latent_min_size : tile / cfg.scale_factor();
    moments = tiled(xx, tile, latent_tile, tiling.tile_overlap_factor, [&](const torch::Tensor& t) { return encode_moments(t); });
  } else {
    moments = encode_moments(xx).to(torch::kFloat32);
  }
  auto parts = moments.chunk(2, 1);  // mean, logvar: [B, latent, h, w]
  VAEPosterior p;
  p.mean = parts[0].contiguous();
  p.logvar = torch::clamp(parts[1], -30.0, 20.0).contiguous();
  p.std = torch::exp(0.5 * p.logvar);
  return p;
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& z, const VAETiling& tiling) {
  nn::ForwardGuard no_grad;
  if (z.dim() != 4 || z.size(1) != cfg.latent_channels)
    throw InputError("VAE decode: latent has shape " + c10::str(z.sizes()) + ", expected [B, " +
                     std::to_string(cfg.latent_channels) + ", h, w]");
  auto zz = z.to(device(), dtype());
  const auto tile = tiling.tile_sample_min_size > 0 ? tiling.tile_sample_min_size : cfg.sample_size;
  const auto latent_tile = tiling.tile_latent_min_size > 0 ? tiling.tile_latent_min_size : tile / cfg.scale_factor();
  if (!(tiling.enabled && (zz.size(2) > latent_tile || zz.size(3) > latent_tile)))
    return decode_sample(zz).to(torch::kFloat32);
  return tiled(zz, latent_tile, tile, tiling.tile_overlap_factor, [&](const torch::Tensor& t) { return decode_sample(t); });
}

AutoencoderKL load_vae(const std::filesystem::path& dir, const VAELoadOptions& opts) {
  VAEConfig cfg = load_vae_config(dir);
  check_compute_dtype("VAE", opts.dtype, opts.device);
  auto ckpt = open_diffusers_checkpoint(dir);
  TensorMap tensors = load_tensors(ckpt);
  AutoencoderKL model(cfg, opts.attention_q_chunk);
  BindOptions bo;
  bo.dtype = opts.dtype;
  bo.device = opts.device;
  bo.source = ckpt.source();
  bind_weights(*model, tensors, bo);
  nn::convs_to_channels_last(*model, opts.dtype, opts.device);
  log_debug("loaded VAE from {}: {} levels, latent {}, scaling {}, dtype {}", dir.string(), cfg.n_level(),
            cfg.latent_channels, cfg.scaling_factor, c10::toString(opts.dtype));
  return model;
}

}  // namespace lli::models
