// Ref: transformers/models/sam/modeling_sam.py SamVisionEncoder / SamVisionLayer /
// SamVisionAttention (eager) / SamVisionNeck / SamLayerNorm (v4.45); configuration_sam.py.
#include "models/sam_image_encoder.h"
#include "nn/grad_mode.h"

#include <algorithm>
#include <string>

#include "lli/error.h"
#include "nn/attention.h"

namespace lli::models {

// ---- config -------------------------------------------------------------------------------

bool SamVisionConfig::is_global(std::int64_t layer) const {
  return window_size <= 0 ||
         std::find(global_attn_indexes.begin(), global_attn_indexes.end(), layer) != global_attn_indexes.end();
}

SamVisionConfig parse_sam_vision_config(const ConfigReader& r) {
  SamVisionConfig c;
  c.hidden_size = r.get_int("hidden_size", c.hidden_size);
  c.output_channels = r.get_int("output_channels", c.output_channels);
  c.num_hidden_layers = r.get_int("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.get_int("num_attention_heads", c.num_attention_heads);
  c.num_channels = r.get_int("num_channels", c.num_channels);
  c.image_size = r.get_int("image_size", c.image_size);
  c.patch_size = r.get_int("patch_size", c.patch_size);
  if (r.has("hidden_act"))
    c.hidden_act = nn::parse_activation(r.get_string("hidden_act", ""), r.where("hidden_act"));
  c.layer_norm_eps = r.get_double("layer_norm_eps", c.layer_norm_eps);
  c.qkv_bias = r.get_bool("qkv_bias", c.qkv_bias);
  c.mlp_ratio = r.get_double("mlp_ratio", c.mlp_ratio);
  c.use_abs_pos = r.get_bool("use_abs_pos", c.use_abs_pos);
  c.use_rel_pos = r.get_bool("use_rel_pos", c.use_rel_pos);
  c.window_size = r.get_int("window_size", c.window_size);
  if (r.has("global_attn_indexes")) {
    const auto& v = r.at("global_attn_indexes");
    if (!v.is_array()) throw ModelError(r.where("global_attn_indexes") + ": expected a list of integers, got " + v.dump());
    c.global_attn_indexes.clear();
    for (const auto& x : v) {
      if (!x.is_number_integer())
        throw ModelError(r.where("global_attn_indexes") + ": expected a list of integers, got " + v.dump());
      c.global_attn_indexes.push_back(x.get<std::int64_t>());
    }
  }
  c.num_pos_feats = r.get_int("num_pos_feats", c.num_pos_feats);
  // transformers: mlp_dim = int(hidden_size * mlp_ratio) if mlp_dim is None.
  c.mlp_dim = r.has("mlp_dim") ? r.get_int("mlp_dim", 0) : static_cast<std::int64_t>(c.hidden_size * c.mlp_ratio);

  r.require_positive("hidden_size", c.hidden_size);
  r.require_positive("output_channels", c.output_channels);
  r.require_positive("num_hidden_layers", c.num_hidden_layers);
  r.require_positive("num_attention_heads", c.num_attention_heads);
  r.require_positive("num_channels", c.num_channels);
  r.require_positive("image_size", c.image_size);
  r.require_positive("patch_size", c.patch_size);
  r.require_positive("num_pos_feats", c.num_pos_feats);
  r.require_positive("mlp_dim", c.mlp_dim);
  if (c.window_size < 0) throw ModelError(r.where("window_size") + ": must be >= 0, got " + std::to_string(c.window_size));
  if (c.hidden_size % c.num_attention_heads != 0)
    throw ModelError(r.where("hidden_size") + ": " + std::to_string(c.hidden_size) +
                     " is not divisible by num_attention_heads " + std::to_string(c.num_attention_heads));
  if (c.image_size % c.patch_size != 0)
    throw ModelError(r.where("image_size") + ": " + std::to_string(c.image_size) + " is not a multiple of patch_size " +
                     std::to_string(c.patch_size));
  for (auto i : c.global_attn_indexes)
    if (i < 0 || i >= c.num_hidden_layers)
      throw ModelError(r.where("global_attn_indexes") + ": layer " + std::to_string(i) + " is out of range (0.." +
                       std::to_string(c.num_hidden_layers - 1) + ")");
  return c;
}

// ---- shared blocks ------------------------------------------------------------------------

SamLayerNorm2dImpl::SamLayerNorm2dImpl(std::int64_t channels, double e) : eps(e) {
  weight = register_parameter("weight", nn::placeholder({channels}), false);
  bias = register_parameter("bias", nn::placeholder({channels}), false);
}

torch::Tensor SamLayerNorm2dImpl::forward(const torch::Tensor& x) {
  const auto dtype = x.scalar_type();
  auto xf = x.to(torch::kFloat32);
  auto u = xf.mean(1, /*keepdim=*/true);
  auto d = xf - u;
  auto s = d.pow(2).mean(1, /*keepdim=*/true);
  auto y = (d / torch::sqrt(s + eps)).to(dtype);
  return weight.view({-1, 1, 1}) * y + bias.view({-1, 1, 1});
}

torch::Tensor sam_linear(nn::LinearImpl& l, const torch::Tensor& x) {
  const auto in = l.weight.size(1), out = l.weight.size(0);
  const auto rows = x.numel() / std::max<std::int64_t>(1, in);
  if (x.scalar_type() != torch::kFloat32 || l.weight.scalar_type() != torch::kFloat32 || !x.device().is_cpu() ||
      rows < 256 || !at::hasMKLDNN())
    return l.forward(x);
  auto shape = x.sizes().vec();
  shape.back() = out;
  // [rows, in] as a channels-last [1, in, rows, 1] image: conv2d with a [out, in, 1, 1] kernel.
  auto x4 = x.reshape({1, rows, 1, in}).permute({0, 3, 1, 2});
  auto y = torch::conv2d(x4, l.weight.view({out, in, 1, 1}), l.bias);  // [1, out, rows, 1] channels last
  return y.permute({0, 2, 3, 1}).reshape(shape);
}

SamMLPBlockImpl::SamMLPBlockImpl(std::int64_t hidden, std::int64_t mlp_dim, nn::Activation a) : act(a) {
  lin1 = register_module("lin1", nn::Linear(hidden, mlp_dim));
  lin2 = register_module("lin2", nn::Linear(mlp_dim, hidden));
}

torch::Tensor SamMLPBlockImpl::forward(const torch::Tensor& x) {
  return sam_linear(*lin2, nn::apply_activation(sam_linear(*lin1, x), act));
}

// ---- encoder ------------------------------------------------------------------------------

SamPatchEmbeddingsImpl::SamPatchEmbeddingsImpl(const SamVisionConfig& c) : cfg(c) {
  nn::Conv2dOptions o;
  o.in = c.num_channels;
  o.out = c.hidden_size;
  o.kernel = c.patch_size;
  o.stride = c.patch_size;
  projection = register_module("projection", nn::Conv2d(o));
}

torch::Tensor SamPatchEmbeddingsImpl::forward(const torch::Tensor& pixel_values) {
  if (pixel_values.dim() != 4 || pixel_values.size(1) != cfg.num_channels || pixel_values.size(2) != cfg.image_size ||
      pixel_values.size(3) != cfg.image_size)
    throw InputError("SAM image encoder: pixel_values have shape " + c10::str(pixel_values.sizes()) +
                     " but the model expects [B, " + std::to_string(cfg.num_channels) + ", " +
                     std::to_string(cfg.image_size) + ", " + std::to_string(cfg.image_size) + "]");
  return projection(pixel_values).permute({0, 2, 3, 1});  // [B, g, g, D]
}

SamVisionAttentionImpl::SamVisionAttentionImpl(const SamVisionConfig& c, std::int64_t w) : cfg(c), window(w) {
  qkv = register_module("qkv", nn::Linear(c.hidden_size, 3 * c.hidden_size, c.qkv_bias));
  proj = register_module("proj", nn::Linear(c.hidden_size, c.hidden_size));
  if (c.use_rel_pos) {
    rel_pos_h = register_parameter("rel_pos_h", nn::placeholder({2 * w - 1, c.head_dim()}), false);
    rel_pos_w = register_parameter("rel_pos_w", nn::placeholder({2 * w - 1, c.head_dim()}), false);
  }
}

namespace {

// transformers get_rel_pos with q_size == k_size == n (always the case here: the table is built
// for the window / grid it is applied to, so no interpolation): R[i, j] = rel_pos[i - j + n - 1].
// rel_pos: [2n - 1, d] -> [n, n, d]
torch::Tensor gather_rel_pos(const torch::Tensor& rel_pos, std::int64_t n) {
  auto i = torch::arange(n, torch::TensorOptions().dtype(torch::kInt64).device(rel_pos.device()));
  auto idx = i.unsqueeze(1) - i.unsqueeze(0) + (n - 1);  // [n, n]
  return rel_pos.index_select(0, idx.reshape({-1})).view({n, n, rel_pos.size(1)});
}

// Score elements per attention() call (2^22: 8 MiB in bf16, 16 MiB in fp32): bounded
// allocations that glibc reuses instead of one fresh [B*H, L, L] block per layer.
constexpr std::int64_t kScoreBudget = std::int64_t{1} << 22;

}  // namespace

torch::Tensor SamVisionAttentionImpl::forward(const torch::Tensor& x) {
  // x: [B, h, w, D]
  const auto B = x.size(0), h = x.size(1), w = x.size(2), D = x.size(3);
  const auto H = cfg.num_attention_heads, hd = D / H, L = h * w;
  if (cfg.use_rel_pos && (h != window || w != window))
    throw RuntimeError("SAM vision attention: a " + std::to_string(h) + "x" + std::to_string(w) +
                       " token grid does not match the relative-position tables built for " + std::to_string(window));
  // qkv: [3, B, H, L, hd]
  auto qkv_out = sam_linear(*qkv, x).reshape({B, L, 3, H, hd}).permute({2, 0, 3, 1, 4});
  auto q = qkv_out[0], k = qkv_out[1], v = qkv_out[2];  // [B, H, L, hd]

  nn::AttentionOptions opt;
  opt.scale_mode = nn::AttentionScale::multiply_query;
  opt.scale = 1.0 / std::sqrt(static_cast<double>(hd));
  opt.softmax_fp32 = true;
  if (cfg.use_rel_pos) {
    // rel_h[b, i, j, kh] = sum_c q[b, i, j, c] * Rh[i, kh, c] (q unscaled, as the reference).
    auto rq = q.reshape({B * H, h, w, hd});
    auto Rh = gather_rel_pos(rel_pos_h, h);  // [h, h, hd]
    auto Rw = gather_rel_pos(rel_pos_w, w);  // [w, w, hd]
    opt.rel_h = torch::einsum("bhwc,hkc->bhwk", {rq, Rh}).reshape({B, H, L, h});
    opt.rel_w = torch::einsum("bhwc,wkc->bhwk", {rq, Rw}).reshape({B, H, L, w});
  }
  torch::Tensor out;
  if (L >= 1024 && B * H > 1) {
    // Global layers: one head at a time, query rows in chunks of kScoreBudget / L: GEMMs of
    // [rows, d] x [d, L] with many rows, ~2x faster on CPU than all heads with few rows each.
    out = torch::empty({B, H, L, hd}, q.options());
    opt.q_chunk = std::max<std::int64_t>(16, kScoreBudget / L);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t hh = 0; hh < H; ++hh) {
        nn::AttentionOptions o = opt;
        if (cfg.use_rel_pos) {
          o.rel_h = opt.rel_h.narrow(0, b, 1).narrow(1, hh, 1);
          o.rel_w = opt.rel_w.narrow(0, b, 1).narrow(1, hh, 1);
        }
        auto sl = [&](const torch::Tensor& t) { return t.narrow(0, b, 1).narrow(1, hh, 1); };
        out.narrow(0, b, 1).narrow(1, hh, 1).copy_(nn::attention(sl(q), sl(k), sl(v), torch::Tensor(), o));
      }
  } else {
    opt.q_chunk = std::max<std::int64_t>(16, kScoreBudget / std::max<std::int64_t>(1, B * H * L));
    out = nn::attention(q, k, v, torch::Tensor(), opt);  // [B, H, L, hd]
  }
  out = out.view({B, H, h, w, hd}).permute({0, 2, 3, 1, 4}).reshape({B, h, w, D});
  return sam_linear(*proj, out);
}

SamVisionLayerImpl::SamVisionLayerImpl(const SamVisionConfig& c, std::int64_t ws) : window_size(ws) {
  layer_norm1 = register_module("layer_norm1", nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
  attn = register_module("attn", SamVisionAttention(c, ws > 0 ? ws : c.grid()));
  layer_norm2 = register_module("layer_norm2", nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
  mlp = register_module("mlp", SamMLPBlock(c.hidden_size, c.mlp_dim, c.hidden_act));
}

torch::Tensor SamVisionLayerImpl::forward(const torch::Tensor& x) {
  // x: [B, H, W, D]
  auto h = layer_norm1(x);
  if (window_size > 0) {
    const auto B = h.size(0), H = h.size(1), W = h.size(2), D = h.size(3), ws = window_size;
    const auto pad_h = (ws - H % ws) % ws, pad_w = (ws - W % ws) % ws;
    if (pad_h > 0 || pad_w > 0) h = torch::constant_pad_nd(h, {0, 0, 0, pad_w, 0, pad_h}, 0);
    const auto Hp = H + pad_h, Wp = W + pad_w;
    // windows: [B * nH * nW, ws, ws, D]
    auto win = h.reshape({B, Hp / ws, ws, Wp / ws, ws, D}).permute({0, 1, 3, 2, 4, 5}).reshape({-1, ws, ws, D});
    auto a = attn(win);
    a = a.reshape({B, Hp / ws, Wp / ws, ws, ws, D}).permute({0, 1, 3, 2, 4, 5}).reshape({B, Hp, Wp, D});
    if (pad_h > 0 || pad_w > 0) a = a.narrow(1, 0, H).narrow(2, 0, W);
    h = a;
  } else {
    h = attn(h);
  }
  auto y = x + h;
  return y + mlp(layer_norm2(y));
}

SamVisionNeckImpl::SamVisionNeckImpl(const SamVisionConfig& c) {
  nn::Conv2dOptions o1;
  o1.in = c.hidden_size;
  o1.out = c.output_channels;
  o1.kernel = 1;
  o1.bias = false;
  conv1 = register_module("conv1", nn::Conv2d(o1));
  // SamVisionNeck builds its SamLayerNorms with the class default eps (1e-6), not the config's.
  layer_norm1 = register_module("layer_norm1", SamLayerNorm2d(c.output_channels, 1e-6));
  nn::Conv2dOptions o2;
  o2.in = c.output_channels;
  o2.out = c.output_channels;
  o2.kernel = 3;
  o2.padding = 1;
  o2.bias = false;
  conv2 = register_module("conv2", nn::Conv2d(o2));
  layer_norm2 = register_module("layer_norm2", SamLayerNorm2d(c.output_channels, 1e-6));
}

torch::Tensor SamVisionNeckImpl::forward(const torch::Tensor& x) {
  auto h = x.permute({0, 3, 1, 2});  // [B, D, g, g]
  h = layer_norm1(conv1(h));
  return layer_norm2(conv2(h));
}

SamVisionEncoderImpl::SamVisionEncoderImpl(const SamVisionConfig& c) : cfg(c) {
  patch_embed = register_module("patch_embed", SamPatchEmbeddings(c));
  if (c.use_abs_pos) pos_embed = register_parameter("pos_embed", nn::placeholder({1, c.grid(), c.grid(), c.hidden_size}), false);
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layer_list.push_back(SamVisionLayer(c, c.layer_window(i)));
    layers->push_back(layer_list.back());
  }
  neck = register_module("neck", SamVisionNeck(c));
}

torch::Tensor SamVisionEncoderImpl::forward(const torch::Tensor& pixel_values, const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  const auto& w = patch_embed->projection->weight;
  auto h = patch_embed(pixel_values.to(w.device(), w.scalar_type()));  // [B, g, g, D]
  if (pos_embed.defined()) h = h + pos_embed;
  nn::tap_if(tap, "vision.hidden_state", 0, h);
  for (std::size_t i = 0; i < layer_list.size(); ++i) {
    h = layer_list[i]->forward(h);
    nn::tap_if(tap, "vision.hidden_state", static_cast<std::int64_t>(i) + 1, h);
  }
  auto out = neck(h);  // [B, C_out, g, g]
  nn::tap_if(tap, "vision.neck", -1, out);
  return out;
}

}  // namespace lli::models
