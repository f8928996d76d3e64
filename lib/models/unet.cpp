// Ref: diffusers/models/unets/unet_2d_condition.py UNet2DConditionModel (__init__, forward),
// unet_2d_blocks.py CrossAttnDownBlock2D / DownBlock2D / UNetMidBlock2DCrossAttn / UpBlock2D /
// CrossAttnUpBlock2D, embeddings.py get_timestep_embedding / TimestepEmbedding (v0.31).
#include "models/unet.h"
#include "nn/grad_mode.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "lli/error.h"
#include "lli/log.h"
#include "lli/tensor_io.h"
#include "nn/group_norm_bf16.h"

namespace lli::models {

namespace {

// An int, or a list of exactly n ints, as one value per level.
std::vector<std::int64_t> ints_per_level(const ConfigReader& r, const std::string& key, std::size_t n,
                                         std::int64_t def) {
  if (!r.has(key)) return std::vector<std::int64_t>(n, def);
  const auto& v = r.at(key);
  if (v.is_array()) {
    if (v.size() != n)
      throw ModelError(r.where(key) + ": expected " + std::to_string(n) + " values (one per block), got " + v.dump());
    std::vector<std::int64_t> out;
    for (const auto& x : v) {
      if (!x.is_number_integer())
        throw ModelError(r.where(key) + ": expected integers, got " + v.dump() +
                         (x.is_array() ? " (nested lists per layer are not supported)" : ""));
      out.push_back(x.get<std::int64_t>());
    }
    return out;
  }
  return std::vector<std::int64_t>(n, r.get_int(key, def));
}

std::vector<bool> bools_per_level(const ConfigReader& r, const std::string& key, std::size_t n, bool def) {
  if (!r.has(key)) return std::vector<bool>(n, def);
  const auto& v = r.at(key);
  if (v.is_array()) {
    if (v.size() != n)
      throw ModelError(r.where(key) + ": expected " + std::to_string(n) + " values (one per block), got " + v.dump());
    std::vector<bool> out;
    for (const auto& x : v) {
      if (!x.is_boolean()) throw ModelError(r.where(key) + ": expected true or false values, got " + v.dump());
      out.push_back(x.get<bool>());
    }
    return out;
  }
  return std::vector<bool>(n, r.get_bool(key, def));
}

std::vector<std::string> strings(const ConfigReader& r, const std::string& key, const std::vector<std::string>& def) {
  if (!r.has(key)) return def;
  const auto& v = r.at(key);
  std::vector<std::string> out;
  if (!v.is_array()) throw ModelError(r.where(key) + ": expected a list of block type names, got " + v.dump());
  for (const auto& x : v) {
    if (!x.is_string()) throw ModelError(r.where(key) + ": expected a list of block type names, got " + v.dump());
    out.push_back(x.get<std::string>());
  }
  return out;
}

std::optional<nn::Activation> optional_activation(const ConfigReader& r, const std::string& key) {
  if (!r.has(key)) return std::nullopt;
  return nn::parse_activation(r.get_string(key, ""), r.where(key));
}

nn::ResnetBlock2DConfig resnet_config(const UNetConfig& c, std::int64_t in, std::int64_t out, double scale = 1.0) {
  nn::ResnetBlock2DConfig rc;
  rc.in_channels = in;
  rc.out_channels = out;
  rc.temb_channels = c.time_embed_dim;
  rc.groups = c.norm_num_groups;
  rc.eps = c.norm_eps;
  rc.act = c.act_fn;
  rc.output_scale_factor = scale;
  return rc;
}

nn::Transformer2DConfig transformer_config(const UNetConfig& c, std::int64_t level, std::int64_t channels,
                                           std::int64_t n_layer, std::int64_t q_chunk) {
  const auto i = static_cast<std::size_t>(level);
  nn::Transformer2DConfig t;
  t.in_channels = channels;
  t.n_head = c.num_attention_heads[i];
  t.head_dim = channels / t.n_head;
  t.n_layer = n_layer;
  t.cross_attention_dim = c.cross_attention_dims[i];
  t.norm_num_groups = c.norm_num_groups;
  t.use_linear_projection = c.use_linear_projection;
  t.only_cross_attention = c.only_cross_attention[i];
  t.upcast_attention = c.upcast_attention;
  t.gated = c.gligen;
  t.q_chunk = q_chunk;
  return t;
}

void require_null(const ConfigReader& r, const std::string& key, const std::string& feature) {
  if (r.has(key))
    throw ModelError(r.where(key) + ": " + r.at(key).dump() + " selects " + feature +
                     ", which is not supported (only null is)");
}

}  // namespace

UNetConfig parse_unet_config(const nlohmann::json& j, const std::string& source) {
  ConfigReader r(j, source);
  const std::string cls = r.get_string("_class_name", "UNet2DConditionModel");
  if (cls != "UNet2DConditionModel")
    throw ModelError(r.where("_class_name") + ": \"" + cls + "\" is not a UNet2DConditionModel");

  // Features this implementation does not have: refused by name, never ignored.
  require_null(r, "class_embed_type", "a class embedding");
  require_null(r, "num_class_embeds", "a class embedding");
  require_null(r, "projection_class_embeddings_input_dim", "a projected class embedding");
  require_null(r, "addition_embed_type", "an additional embedding (SDXL / Kandinsky)");
  require_null(r, "addition_time_embed_dim", "an additional time embedding (SDXL)");
  require_null(r, "encoder_hid_dim", "an encoder_hidden_states projection");
  require_null(r, "encoder_hid_dim_type", "an encoder_hidden_states projection");
  require_null(r, "time_cond_proj_dim", "a timestep condition projection (LCM)");
  require_null(r, "cross_attention_norm", "a cross-attention norm");
  require_null(r, "reverse_transformer_layers_per_block", "per-layer up-block transformer depths");
  if (r.get_bool("dual_cross_attention", false))
    throw ModelError(r.where("dual_cross_attention") + ": true is not supported (dual cross attention)");
  if (r.get_bool("class_embeddings_concat", false))
    throw ModelError(r.where("class_embeddings_concat") + ": true is not supported (no class embedding)");
  const auto tet = r.get_string("time_embedding_type", "positional");
  if (tet != "positional")
    throw ModelError(r.where("time_embedding_type") + ": \"" + tet + "\" is not supported (only \"positional\")");
  const auto shift = r.get_string("resnet_time_scale_shift", "default");
  if (shift != "default")
    throw ModelError(r.where("resnet_time_scale_shift") + ": \"" + shift + "\" is not supported (only \"default\")");
  const auto attention_type = r.get_string("attention_type", "default");
  if (attention_type != "default" && attention_type != "gated")
    throw ModelError(r.where("attention_type") + ": \"" + attention_type +
                     "\" is not supported (\"default\", or \"gated\" = GLIGEN text-box grounding)");
  const auto mid_type = r.get_string("mid_block_type", "");
  if (mid_type != "UNetMidBlock2DCrossAttn")
    throw ModelError(r.where("mid_block_type") + ": " + (r.has("mid_block_type") ? "\"" + mid_type + "\"" : "null") +
                     " is not supported (only \"UNetMidBlock2DCrossAttn\")");

  UNetConfig c;
  c.in_channels = r.get_int("in_channels", c.in_channels);
  c.out_channels = r.get_int("out_channels", c.out_channels);
  c.sample_size = r.get_int("sample_size", c.sample_size);
  c.center_input_sample = r.get_bool("center_input_sample", false);
  c.flip_sin_to_cos = r.get_bool("flip_sin_to_cos", true);
  c.freq_shift = r.get_double("freq_shift", 0);
  r.require_positive("in_channels", c.in_channels);
  r.require_positive("out_channels", c.out_channels);

  c.block_out_channels = parse_block_out_channels(r, c.block_out_channels);
  const auto n = c.block_out_channels.size();
  const auto down_types = strings(r, "down_block_types", {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                          "CrossAttnDownBlock2D", "DownBlock2D"});
  const auto up_types =
      strings(r, "up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"});
  if (down_types.size() != n || up_types.size() != n)
    throw ModelError(source + ": down_block_types (" + std::to_string(down_types.size()) + "), up_block_types (" +
                     std::to_string(up_types.size()) + ") and block_out_channels (" + std::to_string(n) +
                     ") must have the same length");
  for (const auto& t : down_types) {
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D")
      throw ModelError(r.where("down_block_types") + ": \"" + t +
                       "\" is not supported (CrossAttnDownBlock2D, DownBlock2D)");
    c.down_cross_attention.push_back(t == "CrossAttnDownBlock2D");
  }
  for (const auto& t : up_types) {
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D")
      throw ModelError(r.where("up_block_types") + ": \"" + t + "\" is not supported (CrossAttnUpBlock2D, UpBlock2D)");
    c.up_cross_attention.push_back(t == "CrossAttnUpBlock2D");
  }

  c.layers_per_block = ints_per_level(r, "layers_per_block", n, 2);
  c.only_cross_attention = bools_per_level(r, "only_cross_attention", n, false);
  // diffusers' naming quirk: `attention_head_dim` is the NUMBER of heads when num_attention_heads
  // is null (num_attention_heads = num_attention_heads or attention_head_dim).
  c.num_attention_heads = r.has("num_attention_heads") ? ints_per_level(r, "num_attention_heads", n, 8)
                                                       : ints_per_level(r, "attention_head_dim", n, 8);
  c.cross_attention_dims = ints_per_level(r, "cross_attention_dim", n, 1280);
  c.cross_attention_dim = c.cross_attention_dims[0];
  c.transformer_layers_per_block = ints_per_level(r, "transformer_layers_per_block", n, 1);
  c.downsample_padding = r.get_int("downsample_padding", 1);
  c.mid_block_scale_factor = r.get_double("mid_block_scale_factor", 1);
  c.act_fn = nn::parse_activation(r.get_string("act_fn", "silu"), r.where("act_fn"));
  if (!r.has("norm_num_groups") && j.contains("norm_num_groups"))
    throw ModelError(r.where("norm_num_groups") + ": null is not supported (the blocks need GroupNorm groups)");
  c.norm_num_groups = r.get_int("norm_num_groups", 32);
  c.norm_eps = r.get_double("norm_eps", 1e-5);
  c.use_linear_projection = r.get_bool("use_linear_projection", false);
  c.upcast_attention = r.get_bool("upcast_attention", false);
  c.conv_in_kernel = r.get_int("conv_in_kernel", 3);
  c.conv_out_kernel = r.get_int("conv_out_kernel", 3);
  c.time_embed_dim = r.get_int("time_embedding_dim", 4 * c.block_out_channels[0]);
  c.time_embedding_act_fn = optional_activation(r, "time_embedding_act_fn");
  c.timestep_post_act = optional_activation(r, "timestep_post_act");
  c.gated_attention = attention_type == "gated";
  c.position_net.positive_len = c.cross_attention_dim;
  c.position_net.out_dim = c.cross_attention_dim;

  r.require_positive("norm_num_groups", c.norm_num_groups);
  r.require_positive("time_embedding_dim", c.time_embed_dim);
  if (c.downsample_padding < 0)
    throw ModelError(r.where("downsample_padding") + ": must be >= 0, got " + std::to_string(c.downsample_padding));
  for (auto k : {"conv_in_kernel", "conv_out_kernel"}) {
    const auto v = r.get_int(k, 3);
    if (v <= 0 || v % 2 == 0) throw ModelError(r.where(k) + ": must be a positive odd number, got " + std::to_string(v));
  }
  for (std::size_t i = 0; i < n; ++i) {
    const auto ch = c.block_out_channels[i];
    r.require_positive("layers_per_block", c.layers_per_block[i]);
    r.require_positive("transformer_layers_per_block", c.transformer_layers_per_block[i]);
    r.require_positive("cross_attention_dim", c.cross_attention_dims[i]);
    const auto heads_key = r.has("num_attention_heads") ? "num_attention_heads" : "attention_head_dim";
    r.require_positive(heads_key, c.num_attention_heads[i]);
    if (ch % c.num_attention_heads[i] != 0)
      throw ModelError(r.where(heads_key) + ": block_out_channels[" + std::to_string(i) + "] = " + std::to_string(ch) +
                       " is not divisible by " + std::to_string(c.num_attention_heads[i]) + " heads");
    if (ch % c.norm_num_groups != 0)
      throw ModelError(r.where("norm_num_groups") + ": block_out_channels[" + std::to_string(i) + "] = " +
                       std::to_string(ch) + " is not divisible by " + std::to_string(c.norm_num_groups));
  }
  return c;
}

UNetConfig load_unet_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  return parse_unet_config(read_json_file(path), path.string());
}

st::Checkpoint open_diffusers_checkpoint(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string stem = "diffusion_pytorch_model";
  for (const auto& name : {stem + ".safetensors", stem + ".safetensors.index.json", stem + ".fp16.safetensors",
                           stem + ".safetensors.index.fp16.json"})
    if (fs::exists(dir / name, ec)) return st::Checkpoint::open(dir / name);
  throw ModelError(dir.string() + ": no " + stem + ".safetensors, " + stem + ".safetensors.index.json or their .fp16 " +
                   "variants (is it a diffusers model folder?)");
}

std::vector<std::int64_t> parse_block_out_channels(const ConfigReader& r, const std::vector<std::int64_t>& def) {
  if (!r.has("block_out_channels")) return def;
  const auto& v = r.at("block_out_channels");
  if (!v.is_array() || v.empty()) throw ModelError(r.where("block_out_channels") + ": expected a list of integers");
  std::vector<std::int64_t> out;
  for (const auto& x : v) {
    if (!x.is_number_integer() || x.get<std::int64_t>() <= 0)
      throw ModelError(r.where("block_out_channels") + ": expected positive integers, got " + v.dump());
    out.push_back(x.get<std::int64_t>());
  }
  return out;
}

void check_compute_dtype(const std::string& what, torch::Dtype dtype, const torch::Device& device) {
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16 && dtype != torch::kHalf)
    throw ModelError(what + ": unsupported compute dtype " + std::string(c10::toString(dtype)) +
                     " (f32, bf16, or f16 on CUDA)");
  if (dtype == torch::kHalf && device.is_cpu())
    throw ModelError(what + ": fp16 compute is not supported on CPU (use f32 or bf16)");
}

torch::Tensor timestep_embedding(const torch::Tensor& t, std::int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  const auto half = dim / 2;
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(t.device());
  auto exponent = torch::arange(0, half, opts) * (-std::log(10000.0));  // fp32, as the reference
  exponent = exponent / (static_cast<double>(half) - freq_shift);
  auto e = t.to(torch::kFloat32).unsqueeze(1) * torch::exp(exponent).unsqueeze(0);  // [B, half]
  auto emb = flip_sin_to_cos ? torch::cat({torch::cos(e), torch::sin(e)}, -1) : torch::cat({torch::sin(e), torch::cos(e)}, -1);
  if (dim % 2 == 1) emb = torch::constant_pad_nd(emb, {0, 1}, 0);
  return emb;  // [B, dim]
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(std::int64_t in, std::int64_t dim, nn::Activation a,
                                             std::optional<nn::Activation> post)
    : act(a), post_act(post) {
  linear_1 = register_module("linear_1", nn::Linear(in, dim));
  linear_2 = register_module("linear_2", nn::Linear(dim, dim));
}

torch::Tensor TimestepEmbeddingImpl::forward(const torch::Tensor& t_emb) {
  auto h = linear_2(nn::apply_activation(linear_1(t_emb), act));
  return post_act ? nn::apply_activation(h, *post_act) : h;
}

UNetDownBlockImpl::UNetDownBlockImpl(const UNetConfig& c, std::int64_t level, std::int64_t q_chunk) {
  const auto i = static_cast<std::size_t>(level);
  const auto out = c.block_out_channels[i];
  const auto in = level == 0 ? c.block_out_channels[0] : c.block_out_channels[i - 1];
  const bool cross = c.down_cross_attention[i];
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (cross) attentions = register_module("attentions", torch::nn::ModuleList());
  for (std::int64_t l = 0; l < c.layers_per_block[i]; ++l) {
    resnet_list.push_back(nn::ResnetBlock2D(resnet_config(c, l == 0 ? in : out, out)));
    resnets->push_back(resnet_list.back());
    if (cross) {
      attention_list.push_back(
          nn::Transformer2DModel(transformer_config(c, level, out, c.transformer_layers_per_block[i], q_chunk)));
      attentions->push_back(attention_list.back());
    }
  }
  if (level + 1 < c.n_level()) {
    downsamplers = register_module("downsamplers", torch::nn::ModuleList());
    downsampler = nn::Downsample2D(out, out, c.downsample_padding);
    downsamplers->push_back(downsampler);
  }
}

torch::Tensor UNetDownBlockImpl::forward(const torch::Tensor& x, const UNetBlockInputs& in,
                                         std::vector<torch::Tensor>& skips) {
  torch::Tensor h = x;
  for (std::size_t l = 0; l < resnet_list.size(); ++l) {
    h = resnet_list[l](h, in.temb);
    if (!attention_list.empty()) h = attention_list[l](h, in.context, in.objs, in.tap);
    skips.push_back(h);
  }
  if (downsampler) {
    h = downsampler(h);
    skips.push_back(h);
  }
  return h;
}

UNetMidBlockImpl::UNetMidBlockImpl(const UNetConfig& c, std::int64_t q_chunk) {
  const auto last = c.n_level() - 1;
  const auto ch = c.block_out_channels.back();
  resnets = register_module("resnets", torch::nn::ModuleList());
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnet_list.push_back(nn::ResnetBlock2D(resnet_config(c, ch, ch, c.mid_block_scale_factor)));
  resnets->push_back(resnet_list.back());
  // num_layers = 1: one (transformer, resnet) pair; its depth is transformer_layers_per_block[-1].
  attention_list.push_back(
      nn::Transformer2DModel(transformer_config(c, last, ch, c.transformer_layers_per_block.back(), q_chunk)));
  attentions->push_back(attention_list.back());
  resnet_list.push_back(nn::ResnetBlock2D(resnet_config(c, ch, ch, c.mid_block_scale_factor)));
  resnets->push_back(resnet_list.back());
}

torch::Tensor UNetMidBlockImpl::forward(const torch::Tensor& x, const UNetBlockInputs& in) {
  auto h = resnet_list[0](x, in.temb);
  for (std::size_t l = 0; l < attention_list.size(); ++l) {
    h = attention_list[l](h, in.context, in.objs, in.tap);
    h = resnet_list[l + 1](h, in.temb);
  }
  return h;
}

UNetUpBlockImpl::UNetUpBlockImpl(const UNetConfig& c, std::int64_t up_index, std::int64_t q_chunk) {
  const auto n = c.n_level();
  const auto level = n - 1 - up_index;  // the level whose per-block values this block takes
  const auto li = static_cast<std::size_t>(level);
  const auto out = c.block_out_channels[li];
  const auto prev_out = up_index == 0 ? out : c.block_out_channels[li + 1];  // previous up block's output
  const auto in = c.block_out_channels[static_cast<std::size_t>(std::max<std::int64_t>(level - 1, 0))];
  const bool cross = c.up_cross_attention[static_cast<std::size_t>(up_index)];
  const auto n_layer = c.layers_per_block[li] + 1;
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (cross) attentions = register_module("attentions", torch::nn::ModuleList());
  for (std::int64_t l = 0; l < n_layer; ++l) {
    const auto skip_ch = l == n_layer - 1 ? in : out;
    const auto res_in = l == 0 ? prev_out : out;
    resnet_list.push_back(nn::ResnetBlock2D(resnet_config(c, res_in + skip_ch, out)));
    resnets->push_back(resnet_list.back());
    if (cross) {
      attention_list.push_back(
          nn::Transformer2DModel(transformer_config(c, level, out, c.transformer_layers_per_block[li], q_chunk)));
      attentions->push_back(attention_list.back());
    }
  }
  if (up_index + 1 < n) {
    upsamplers = register_module("upsamplers", torch::nn::ModuleList());
    upsampler = nn::Upsample2D(out, out);
    upsamplers->push_back(upsampler);
  }
}

torch::Tensor UNetUpBlockImpl::forward(const torch::Tensor& x, const UNetBlockInputs& in,
                                       std::vector<torch::Tensor>& skips) {
  torch::Tensor h = x;
  for (std::size_t l = 0; l < resnet_list.size(); ++l) {
    if (skips.empty()) throw RuntimeError("UNet up block: no skip connection left (inconsistent block layout)");
    h = torch::cat({h, skips.back()}, 1);  // [B, C + C_skip, H, W]
    skips.pop_back();
    h = resnet_list[l](h, in.temb);
    if (!attention_list.empty()) h = attention_list[l](h, in.context, in.objs, in.tap);
  }
  if (upsampler) {
    if (skips.empty()) throw RuntimeError("UNet up block: no skip connection left for the upsampling size");
    h = upsampler->forward(h, {skips.back().size(2), skips.back().size(3)});
  }
  return h;
}

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNetConfig& c, std::int64_t q_chunk) : cfg(c) {
  const auto ch0 = c.block_out_channels[0];
  time_embedding = register_module(
      "time_embedding", TimestepEmbedding(ch0, c.time_embed_dim, c.act_fn, c.timestep_post_act));
  conv_in = register_module(
      "conv_in", nn::Conv2d(nn::conv2d_options(c.in_channels, ch0, c.conv_in_kernel, 1, (c.conv_in_kernel - 1) / 2)));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.n_level(); ++i) {
    down_list.push_back(UNetDownBlock(c, i, q_chunk));
    down_blocks->push_back(down_list.back());
  }
  mid_block = register_module("mid_block", UNetMidBlock(c, q_chunk));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.n_level(); ++i) {
    up_list.push_back(UNetUpBlock(c, i, q_chunk));
    up_blocks->push_back(up_list.back());
  }
  conv_norm_out = register_module("conv_norm_out", nn::GroupNorm(c.norm_num_groups, ch0, c.norm_eps));
  conv_out = register_module(
      "conv_out", nn::Conv2d(nn::conv2d_options(ch0, c.out_channels, c.conv_out_kernel, 1, (c.conv_out_kernel - 1) / 2)));
  if (c.gligen) position_net = register_module("position_net", GLIGENPositionNet(c.position_net));
}

torch::Tensor UNet2DConditionModelImpl::position_net_forward(const torch::Tensor& boxes, const torch::Tensor& masks,
                                                             const torch::Tensor& positive_embeddings) {
  if (!position_net) throw RuntimeError("UNet: GLIGEN grounding requested but the checkpoint has no GLIGEN weights");
  return position_net(boxes, masks, positive_embeddings);
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sample, double timestep,
                                                const torch::Tensor& encoder_hidden_states, const torch::Tensor& objs,
                                                const nn::Tap& tap) {
  const auto B = sample.dim() >= 1 ? sample.size(0) : 0;
  return forward(sample, torch::full({B}, timestep, torch::TensorOptions().dtype(torch::kFloat32).device(device())),
                 encoder_hidden_states, objs, tap);
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sample, const torch::Tensor& timesteps,
                                                const torch::Tensor& encoder_hidden_states, const torch::Tensor& objs,
                                                const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  if (sample.dim() != 4 || sample.size(1) != cfg.in_channels)
    throw InputError("UNet: sample has shape " + c10::str(sample.sizes()) + ", expected [B, " +
                     std::to_string(cfg.in_channels) + ", h, w]");
  const auto B = sample.size(0);
  if (encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(0) != B ||
      encoder_hidden_states.size(2) != cfg.cross_attention_dim)
    throw InputError("UNet: encoder_hidden_states has shape " + c10::str(encoder_hidden_states.sizes()) +
                     ", expected [" + std::to_string(B) + ", L, " + std::to_string(cfg.cross_attention_dim) + "]");
  if (objs.defined()) {
    if (!cfg.gligen) throw RuntimeError("UNet: GLIGEN grounding tokens given but the checkpoint has no fuser weights");
    if (objs.dim() != 3 || objs.size(0) != B || objs.size(2) != cfg.cross_attention_dim)
      throw InputError("UNet: GLIGEN objs have shape " + c10::str(objs.sizes()) + ", expected [" + std::to_string(B) +
                       ", N, " + std::to_string(cfg.cross_attention_dim) + "]");
  }
  const auto dt = dtype();
  const auto dev = device();
  auto x = sample.to(dev, dt);
  if (cfg.center_input_sample) x = 2 * x - 1.0;

  if (timesteps.dim() != 1 || timesteps.size(0) != B)
    throw InputError("UNet: timesteps have shape " + c10::str(timesteps.sizes()) + ", expected [" + std::to_string(B) + "]");
  // Time: t.expand(B) as float32 through the sinusoidal projection, then the weights' dtype.
  auto t = timesteps.to(dev, torch::kFloat32);
  auto t_emb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift).to(dt);
  auto emb = time_embedding(t_emb);  // [B, time_embed_dim]
  if (cfg.time_embedding_act_fn) emb = nn::apply_activation(emb, *cfg.time_embedding_act_fn);
  nn::tap_if(tap, "unet.time_emb", -1, emb);

  UNetBlockInputs in{emb, encoder_hidden_states.to(dev, dt), objs.defined() ? objs.to(dev, dt) : torch::Tensor(), tap};
  auto h = conv_in(nn::prefer_channels_last(x));  // [B, C0, h, w] (channels-last on the bf16 CPU path)
  nn::tap_if(tap, "unet.conv_in", -1, h);
  std::vector<torch::Tensor> skips{h};
  for (std::size_t i = 0; i < down_list.size(); ++i) {
    h = down_list[i](h, in, skips);
    nn::tap_if(tap, "unet.down", static_cast<std::int64_t>(i), h);
  }
  h = mid_block(h, in);
  nn::tap_if(tap, "unet.mid", -1, h);
  for (std::size_t i = 0; i < up_list.size(); ++i) {
    h = up_list[i](h, in, skips);
    nn::tap_if(tap, "unet.up", static_cast<std::int64_t>(i), h);
  }
  h = conv_out(cfg.act_fn == nn::Activation::silu ? conv_norm_out->forward_silu(h)
                                                   : nn::apply_activation(conv_norm_out(h), cfg.act_fn));  // [B, out, h, w]
  nn::tap_if(tap, "unet.out", -1, h);
  return h.to(torch::kFloat32).contiguous();
}

UNet2DConditionModel load_unet(const std::filesystem::path& dir, const UNetLoadOptions& opts) {
  UNetConfig cfg = load_unet_config(dir);
  check_compute_dtype("UNet", opts.dtype, opts.device);

  auto ckpt = open_diffusers_checkpoint(dir);
  TensorMap tensors = load_tensors(ckpt);
  bool grounding_keys = false;
  for (const auto& [k, v] : tensors)
    if (k.rfind("position_net.", 0) == 0 || k.find(".fuser.") != std::string::npos) grounding_keys = true;
  // A "gated" config whose checkpoint lacks the GLIGEN weights is a plain SD UNet; GLIGEN keys
  // under a "default" config are reported as unexpected by the strict binder.
  cfg.gligen = cfg.gated_attention && grounding_keys;
  if (cfg.gated_attention && !grounding_keys)
    log_info("{}: attention_type \"gated\" but no GLIGEN weights (fuser / position_net): loaded as a plain UNet",
             ckpt.source());

  UNet2DConditionModel model(cfg, opts.attention_q_chunk);
  BindOptions bo;
  bo.dtype = opts.dtype;
  bo.device = opts.device;
  bo.source = ckpt.source();
  bind_weights(*model, tensors, bo);
  nn::convs_to_channels_last(*model, opts.dtype, opts.device);
  if (model->position_net) {  // always fp32 (see gligen_position_net.h)
    BindOptions pb = bo;
    pb.dtype = torch::kFloat32;
    pb.prefix = "position_net.";
    pb.ignore_unexpected = true;
    bind_weights(*model->position_net, tensors, pb);
  }
  log_debug("loaded UNet from {}: in {} out {} channels {} cross {} gligen {} dtype {}", dir.string(), cfg.in_channels,
            cfg.out_channels, cfg.block_out_channels.size(), cfg.cross_attention_dim, cfg.gligen,
            c10::toString(opts.dtype));
  return model;
}

}  // namespace lli::models
