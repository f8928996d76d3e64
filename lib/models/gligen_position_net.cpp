// Ref: diffusers/models/embeddings.py GLIGENTextBoundingboxProjection (feature_type "text-only"),
// get_fourier_embeds_from_boundingbox (v0.31).
#include "models/gligen_position_net.h"
#include "nn/grad_mode.h"

#include <string>

#include "lli/error.h"

namespace lli::models {

torch::Tensor gligen_box_fourier_embedding(const torch::Tensor& boxes, std::int64_t n_freq) {
  const auto B = boxes.size(0), N = boxes.size(1);
  // 100 ** (arange(F) / F) in fp32, as the reference (int64 arange / int -> float32).
  auto f = torch::arange(n_freq, torch::TensorOptions().dtype(torch::kInt64)).div(n_freq);  // [F] fp32
  auto freq = torch::pow(100.0, f).to(boxes.device(), boxes.scalar_type());                // [F]
  auto e = freq.view({1, 1, 1, n_freq}) * boxes.unsqueeze(-1);                               // [B, N, 4, F]
  auto sc = torch::stack({e.sin(), e.cos()}, -1);                                            // [B, N, 4, F, 2]
  return sc.permute({0, 1, 3, 4, 2}).reshape({B, N, n_freq * 2 * 4});                        // [B, N, F*2*4]
}

GLIGENPositionNetImpl::GLIGENPositionNetImpl(const GLIGENPositionNetConfig& c) : cfg(c) {
  linears = register_module("linears", torch::nn::ModuleList());
  l0 = nn::Linear(c.positive_len + c.position_dim(), c.hidden);
  l2 = nn::Linear(c.hidden, c.hidden);
  l4 = nn::Linear(c.hidden, c.out_dim);
  linears->push_back(l0);
  linears->push_back(nn::Identity());  // SiLU
  linears->push_back(l2);
  linears->push_back(nn::Identity());  // SiLU
  linears->push_back(l4);
  null_positive_feature = register_parameter("null_positive_feature", nn::placeholder({c.positive_len}), false);
  null_position_feature = register_parameter("null_position_feature", nn::placeholder({c.position_dim()}), false);
}

torch::Tensor GLIGENPositionNetImpl::forward(const torch::Tensor& boxes, const torch::Tensor& masks,
                                             const torch::Tensor& positive_embeddings) {
  nn::ForwardGuard no_grad;
  const auto& w = l0->weight;
  if (boxes.dim() != 3 || boxes.size(2) != 4)
    throw InputError("GLIGEN position net: boxes must be [B, N, 4], got " + c10::str(boxes.sizes()));
  const auto B = boxes.size(0), N = boxes.size(1);
  if (masks.dim() != 2 || masks.size(0) != B || masks.size(1) != N)
    throw InputError("GLIGEN position net: masks must be [" + std::to_string(B) + ", " + std::to_string(N) +
                     "], got " + c10::str(masks.sizes()));
  if (positive_embeddings.dim() != 3 || positive_embeddings.size(0) != B || positive_embeddings.size(1) != N ||
      positive_embeddings.size(2) != cfg.positive_len)
    throw InputError("GLIGEN position net: positive_embeddings must be [" + std::to_string(B) + ", " +
                     std::to_string(N) + ", " + std::to_string(cfg.positive_len) + "], got " +
                     c10::str(positive_embeddings.sizes()));
  const auto opts = torch::TensorOptions().dtype(w.scalar_type()).device(w.device());
  auto m = masks.to(opts).unsqueeze(-1);                                          // [B, N, 1]
  auto xyxy = gligen_box_fourier_embedding(boxes.to(opts), cfg.fourier_freqs);     // [B, N, P]
  xyxy = xyxy * m + (1 - m) * null_position_feature.view({1, 1, -1});
  auto pos = positive_embeddings.to(opts) * m + (1 - m) * null_positive_feature.view({1, 1, -1});
  auto h = torch::cat({pos, xyxy}, -1);                                            // [B, N, positive_len + P]
  h = l4(torch::silu(l2(torch::silu(l0(h)))));                                     // [B, N, out_dim]
  return h.to(torch::kFloat32);
}

}  // namespace lli::models
