// Ref: transformers/models/llava/modeling_llava.py LlavaMultiModalProjector (v4.45).
#include "models/llava_projector.h"

namespace lli::models {

LlavaMultiModalProjectorImpl::LlavaMultiModalProjectorImpl(const LlavaProjectorConfig& c) : cfg(c) {
  linear_1 = register_module("linear_1", nn::Linear(c.in_features, c.out_features, c.bias));
  linear_2 = register_module("linear_2", nn::Linear(c.out_features, c.out_features, c.bias));
}

torch::Tensor LlavaMultiModalProjectorImpl::forward(const torch::Tensor& x, const nn::Tap& tap) {
  auto h = nn::apply_activation(linear_1(x), cfg.act);
  nn::tap_if(tap, "projector.hidden", -1, h);
  return linear_2(h);
}

}  // namespace lli::models
