// Ref: transformers/models/sam/modeling_sam.py SamAttention (eager), SamTwoWayAttentionBlock,
// SamTwoWayTransformer, SamFeedForward, SamMaskDecoder.forward (v4.45); configuration_sam.py.
#include "models/sam_mask_decoder.h"
#include "nn/grad_mode.h"

#include <cmath>
#include <string>

#include "lli/error.h"
#include "nn/attention.h"

namespace lli::models {

SamMaskDecoderConfig parse_sam_mask_decoder_config(const ConfigReader& r) {
  SamMaskDecoderConfig c;
  c.hidden_size = r.get_int("hidden_size", c.hidden_size);
  if (r.has("hidden_act"))
    c.hidden_act = nn::parse_activation(r.get_string("hidden_act", ""), r.where("hidden_act"));
  c.mlp_dim = r.get_int("mlp_dim", c.mlp_dim);
  c.num_hidden_layers = r.get_int("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.get_int("num_attention_heads", c.num_attention_heads);
  c.attention_downsample_rate = r.get_int("attention_downsample_rate", c.attention_downsample_rate);
  c.num_multimask_outputs = r.get_int("num_multimask_outputs", c.num_multimask_outputs);
  c.iou_head_depth = r.get_int("iou_head_depth", c.iou_head_depth);
  c.iou_head_hidden_dim = r.get_int("iou_head_hidden_dim", c.iou_head_hidden_dim);
  c.layer_norm_eps = r.get_double("layer_norm_eps", c.layer_norm_eps);
  r.require_positive("hidden_size", c.hidden_size);
  r.require_positive("mlp_dim", c.mlp_dim);
  r.require_positive("num_hidden_layers", c.num_hidden_layers);
  r.require_positive("num_attention_heads", c.num_attention_heads);
  r.require_positive("attention_downsample_rate", c.attention_downsample_rate);
  r.require_positive("num_multimask_outputs", c.num_multimask_outputs);
  r.require_positive("iou_head_hidden_dim", c.iou_head_hidden_dim);
  if (c.iou_head_depth < 2)
    throw ModelError(r.where("iou_head_depth") + ": must be >= 2 (proj_in and proj_out), got " +
                     std::to_string(c.iou_head_depth));
  if (c.hidden_size % 8 != 0)
    throw ModelError(r.where("hidden_size") + ": " + std::to_string(c.hidden_size) +
                     " is not a multiple of 8 (the upscaling has hidden_size / 4 and / 8 channels)");
  const auto internal = c.hidden_size / c.attention_downsample_rate;
  if (c.hidden_size % c.num_attention_heads != 0 || internal % c.num_attention_heads != 0)
    throw ModelError(r.where("num_attention_heads") + ": " + std::to_string(c.num_attention_heads) +
                     " does not divide hidden_size " + std::to_string(c.hidden_size) + " and hidden_size / " +
                     "attention_downsample_rate " + std::to_string(internal));
  return c;
}

// ---- attention ----------------------------------------------------------------------------

SamAttentionImpl::SamAttentionImpl(std::int64_t hidden, std::int64_t heads, std::int64_t downsample_rate)
    : n_head(heads), internal_dim(hidden / downsample_rate) {
  q_proj = register_module("q_proj", nn::Linear(hidden, internal_dim));
  k_proj = register_module("k_proj", nn::Linear(hidden, internal_dim));
  v_proj = register_module("v_proj", nn::Linear(hidden, internal_dim));
  out_proj = register_module("out_proj", nn::Linear(internal_dim, hidden));
}

torch::Tensor SamAttentionImpl::forward(const torch::Tensor& query, const torch::Tensor& key,
                                        const torch::Tensor& value) {
  // Batch sizes may differ (1 broadcasts): the image side is shared by every prompt until the
  // first image-to-token update.
  const auto Lq = query.size(1), d = internal_dim / n_head;
  auto heads = [&](nn::LinearImpl& proj, const torch::Tensor& x) {  // [N, L, hidden] -> [N, H, L, d]
    return sam_linear(proj, x).view({x.size(0), x.size(1), n_head, d}).transpose(1, 2);
  };
  auto q = heads(*q_proj, query), k = heads(*k_proj, key), v = heads(*v_proj, value);
  nn::AttentionOptions opt;
  opt.scale_mode = nn::AttentionScale::divide_scores;
  opt.scale = std::sqrt(static_cast<double>(d));
  auto out = nn::attention(q, k, v, torch::Tensor(), opt);  // [N, H, Lq, d]
  return sam_linear(*out_proj, out.transpose(1, 2).reshape({out.size(0), Lq, internal_dim}));
}

// ---- two-way transformer ------------------------------------------------------------------

SamTwoWayAttentionBlockImpl::SamTwoWayAttentionBlockImpl(const SamMaskDecoderConfig& c, bool skip)
    : skip_first_layer_pe(skip) {
  const auto C = c.hidden_size, H = c.num_attention_heads;
  self_attn = register_module("self_attn", SamAttention(C, H, 1));
  layer_norm1 = register_module("layer_norm1", nn::LayerNorm(C, c.layer_norm_eps));
  cross_attn_token_to_image =
      register_module("cross_attn_token_to_image", SamAttention(C, H, c.attention_downsample_rate));
  layer_norm2 = register_module("layer_norm2", nn::LayerNorm(C, c.layer_norm_eps));
  mlp = register_module("mlp", SamMLPBlock(C, c.mlp_dim, c.hidden_act));
  layer_norm3 = register_module("layer_norm3", nn::LayerNorm(C, c.layer_norm_eps));
  layer_norm4 = register_module("layer_norm4", nn::LayerNorm(C, c.layer_norm_eps));
  cross_attn_image_to_token =
      register_module("cross_attn_image_to_token", SamAttention(C, H, c.attention_downsample_rate));
}

void SamTwoWayAttentionBlockImpl::forward(torch::Tensor& queries, torch::Tensor& keys, const torch::Tensor& query_pe,
                                          const torch::Tensor& key_pe) {
  // Self-attention of the prompt tokens (the first block replaces them: no residual, no PE).
  if (skip_first_layer_pe) {
    queries = self_attn(queries, queries, queries);
  } else {
    auto q = queries + query_pe;
    queries = queries + self_attn(q, q, queries);
  }
  queries = layer_norm1(queries);

  // Tokens attend to the image.
  auto q = queries + query_pe;
  auto k = keys + key_pe;
  queries = layer_norm2(queries + cross_attn_token_to_image(q, k, keys));

  queries = layer_norm3(queries + mlp(queries));

  // The image attends to the tokens.
  q = queries + query_pe;
  k = keys + key_pe;
  keys = layer_norm4(keys + cross_attn_image_to_token(k, q, queries));
}

SamTwoWayTransformerImpl::SamTwoWayTransformerImpl(const SamMaskDecoderConfig& c) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layer_list.push_back(SamTwoWayAttentionBlock(c, /*skip_first_layer_pe=*/i == 0));
    layers->push_back(layer_list.back());
  }
  final_attn_token_to_image = register_module("final_attn_token_to_image",
                                              SamAttention(c.hidden_size, c.num_attention_heads,
                                                           c.attention_downsample_rate));
  layer_norm_final_attn = register_module("layer_norm_final_attn", nn::LayerNorm(c.hidden_size, 1e-5));
}

std::pair<torch::Tensor, torch::Tensor> SamTwoWayTransformerImpl::forward(const torch::Tensor& point_embeddings,
                                                                          const torch::Tensor& image_embeddings,
                                                                          const torch::Tensor& image_pe) {
  auto queries = point_embeddings;
  auto keys = image_embeddings;
  for (auto& layer : layer_list) layer->forward(queries, keys, point_embeddings, image_pe);
  auto q = queries + point_embeddings;
  auto k = keys + image_pe;
  queries = layer_norm_final_attn(queries + final_attn_token_to_image(q, k, keys));
  return {queries, keys};
}

// ---- heads --------------------------------------------------------------------------------

SamFeedForwardImpl::SamFeedForwardImpl(std::int64_t in, std::int64_t hidden, std::int64_t out,
                                       std::int64_t num_layers) {
  proj_in = register_module("proj_in", nn::Linear(in, hidden));
  proj_out = register_module("proj_out", nn::Linear(hidden, out));
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < num_layers - 2; ++i) {
    layer_list.push_back(nn::Linear(hidden, hidden));
    layers->push_back(layer_list.back());
  }
}

torch::Tensor SamFeedForwardImpl::forward(const torch::Tensor& x) {
  auto h = torch::relu(proj_in(x));
  for (auto& l : layer_list) h = torch::relu(l(h));
  return proj_out(h);
}

// ---- decoder ------------------------------------------------------------------------------

namespace {

// ConvTranspose2d with kernel = stride = 2 (no overlap): a per-pixel [Cin] -> [Cout * 2 * 2]
// product, then a pixel shuffle. fp32 CPU runs the product through oneDNN as a 1x1 convolution
// (libtorch 1.13's fp32 transposed convolution is ~5x slower here); other cases use the layer.
// x: [N, Cin, h, w] -> [N, Cout, 2h, 2w]
torch::Tensor upscale_2x2(nn::ConvTranspose2dImpl& ct, const torch::Tensor& x) {
  const auto& o = ct.opt;
  if (o.kernel != 2 || o.stride != 2 || o.padding != 0 || o.groups != 1 || o.dilation != 1 ||
      x.scalar_type() != torch::kFloat32 || ct.weight.scalar_type() != torch::kFloat32 || !x.device().is_cpu() ||
      !at::hasMKLDNN())
    return ct.forward(x);
  const auto N = x.size(0), Cin = x.size(1), h = x.size(2), w = x.size(3), Cout = ct.weight.size(1);
  // weight [Cin, Cout, 2, 2] -> [Cout * 4, Cin, 1, 1] ordered (co, ky, kx)
  auto wk = ct.weight.permute({1, 2, 3, 0}).reshape({Cout * 4, Cin, 1, 1});
  auto y = torch::conv2d(x, wk);                                    // [N, Cout*4, h, w]
  y = y.view({N, Cout, 2, 2, h, w}).permute({0, 1, 4, 2, 5, 3});   // [N, Cout, h, 2, w, 2]
  y = y.reshape({N, Cout, 2 * h, 2 * w});
  if (ct.bias.defined()) y = y + ct.bias.view({1, Cout, 1, 1});
  return y;
}

}  // namespace

SamMaskDecoderImpl::SamMaskDecoderImpl(const SamMaskDecoderConfig& c) : cfg(c) {
  const auto C = c.hidden_size, M = c.num_mask_tokens();
  iou_token = register_module("iou_token", nn::Embedding(1, C));
  mask_tokens = register_module("mask_tokens", nn::Embedding(M, C));
  transformer = register_module("transformer", SamTwoWayTransformer(c));
  nn::Conv2dOptions o1;
  o1.in = C;
  o1.out = C / 4;
  o1.kernel = 2;
  o1.stride = 2;
  upscale_conv1 = register_module("upscale_conv1", nn::ConvTranspose2d(o1));
  nn::Conv2dOptions o2;
  o2.in = C / 4;
  o2.out = C / 8;
  o2.kernel = 2;
  o2.stride = 2;
  upscale_conv2 = register_module("upscale_conv2", nn::ConvTranspose2d(o2));
  // SamMaskDecoder builds it with the class default eps (1e-6), not the config's.
  upscale_layer_norm = register_module("upscale_layer_norm", SamLayerNorm2d(C / 4, 1e-6));
  output_hypernetworks_mlps = register_module("output_hypernetworks_mlps", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < M; ++i) {
    hypernetwork_list.push_back(SamFeedForward(C, C, C / 8, 3));
    output_hypernetworks_mlps->push_back(hypernetwork_list.back());
  }
  iou_prediction_head =
      register_module("iou_prediction_head", SamFeedForward(C, c.iou_head_hidden_dim, M, c.iou_head_depth));
}

SamMaskDecoderOutput SamMaskDecoderImpl::forward(const torch::Tensor& image_embeddings, const torch::Tensor& image_pe,
                                                 const torch::Tensor& sparse, const torch::Tensor& dense,
                                                 bool multimask, const nn::Tap& tap) {
  SamMaskDecoderOutput all = forward_all(image_embeddings, image_pe, sparse, dense, tap);
  const auto M = cfg.num_mask_tokens();
  SamMaskDecoderOutput out;
  if (multimask) {
    out.masks = all.masks.narrow(2, 1, M - 1);
    out.iou_scores = all.iou_scores.narrow(2, 1, M - 1);
  } else {
    out.masks = all.masks.narrow(2, 0, 1);
    out.iou_scores = all.iou_scores.narrow(2, 0, 1);
  }
  return out;
}

SamMaskDecoderOutput SamMaskDecoderImpl::forward_all(const torch::Tensor& image_embeddings, const torch::Tensor& image_pe,
                                                     const torch::Tensor& sparse, const torch::Tensor& dense,
                                                     const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  const auto& w = iou_token->weight;
  const auto opts = w.options();
  const auto C = cfg.hidden_size, M = cfg.num_mask_tokens();
  if (image_embeddings.dim() != 4 || image_embeddings.size(1) != C)
    throw InputError("SAM mask decoder: image embeddings must be [B, " + std::to_string(C) + ", g, g], got " +
                     c10::str(image_embeddings.sizes()));
  const auto B = image_embeddings.size(0), h = image_embeddings.size(2), wd = image_embeddings.size(3);
  if (sparse.dim() != 4 || sparse.size(0) != B || sparse.size(3) != C)
    throw InputError("SAM mask decoder: sparse prompt embeddings must be [" + std::to_string(B) + ", pb, k, " +
                     std::to_string(C) + "], got " + c10::str(sparse.sizes()));
  if (dense.dim() != 4 || dense.size(0) != B || dense.size(1) != C || dense.size(2) != h || dense.size(3) != wd)
    throw InputError("SAM mask decoder: dense prompt embeddings " + c10::str(dense.sizes()) +
                     " do not match the image embeddings " + c10::str(image_embeddings.sizes()));
  const auto pb = sparse.size(1), N = B * pb;

  // Tokens: [iou, mask_0..M-1, sparse...] per (image, point batch): [N, T, C]
  auto output_tokens = torch::cat({iou_token->weight, mask_tokens->weight}, 0);  // [1 + M, C]
  auto tokens = output_tokens.view({1, 1, 1 + M, C}).expand({B, pb, 1 + M, C});
  if (sparse.size(2) > 0) tokens = torch::cat({tokens, sparse.to(opts)}, 2);
  tokens = tokens.reshape({N, -1, C});

  // Image side per (image, point batch): [N, HW, C]. With one image it stays [1, HW, C] and
  // broadcasts: until the first block's image-to-token update it is the same for every prompt,
  // so that block's image-side projections are computed once (same results, ~25% less work for
  // a batch of prompts). The positional encoding broadcasts too.
  auto src = image_embeddings.to(opts) + dense.to(opts);  // [B, C, h, w]
  if (pb > 1 && B > 1) src = src.repeat_interleave(pb, 0);  // [N, C, h, w]
  src = src.flatten(2).permute({0, 2, 1});                   // [B or N, HW, C]
  auto pos = image_pe.to(opts);
  if (pos.size(0) != 1 && pos.size(0) != B)
    throw InputError("SAM mask decoder: positional encoding batch " + std::to_string(pos.size(0)) + " is not 1 or " +
                     std::to_string(B));
  if (pos.size(0) == B && B > 1 && pb > 1) pos = pos.repeat_interleave(pb, 0);
  pos = pos.flatten(2).permute({0, 2, 1});  // [1 or N, HW, C]
  if (pos.size(0) != 1 && pos.size(0) != N) pos = pos.expand({N, -1, -1});

  auto [queries, keys] = transformer(tokens, src, pos);
  if (keys.size(0) != N) keys = keys.expand({N, -1, -1});
  nn::tap_if(tap, "decoder.queries", -1, queries);
  nn::tap_if(tap, "decoder.keys", -1, keys);
  auto iou_token_out = queries.select(1, 0);   // [N, C]
  auto mask_tokens_out = queries.narrow(1, 1, M);  // [N, M, C]

  // Upscale the image side: [N, C, h, w] -> [N, C/8, 4h, 4w]
  auto img = keys.transpose(1, 2).reshape({N, C, h, wd});
  auto up = torch::gelu(upscale_layer_norm(upscale_2x2(*upscale_conv1, img)));
  up = torch::gelu(upscale_2x2(*upscale_conv2, up));
  nn::tap_if(tap, "decoder.upscaled", -1, up);
  const auto Cu = up.size(1), H4 = up.size(2), W4 = up.size(3);

  std::vector<torch::Tensor> hyper;
  hyper.reserve(static_cast<std::size_t>(M));
  for (std::int64_t i = 0; i < M; ++i) hyper.push_back(hypernetwork_list[static_cast<std::size_t>(i)](mask_tokens_out.select(1, i)));
  auto hyper_in = torch::stack(hyper, 1);  // [N, M, C/8]
  SamMaskDecoderOutput out;
  out.masks = torch::matmul(hyper_in, up.view({N, Cu, H4 * W4})).view({B, pb, M, H4, W4});
  out.iou_scores = iou_prediction_head(iou_token_out).view({B, pb, M});
  return out;
}

}  // namespace lli::models
