// Activation functions named as in transformers' ACT2FN, parsed once at load into an enum.
// Ref: transformers/activations.py (v4.45).
#pragma once

#include <torch/torch.h>

#include <string>

#include "lli/error.h"

namespace lli::nn {

enum class Activation {
  gelu,        // "gelu": exact erf GELU
  gelu_tanh,   // "gelu_new", "gelu_pytorch_tanh", "gelu_fast": tanh approximation
  quick_gelu,  // "quick_gelu": x * sigmoid(1.702 x)
  silu,        // "silu", "swish"
  relu,        // "relu"
};

// `where` names the config key for the error message, e.g. "config.json: text_config.hidden_act".
inline Activation parse_activation(const std::string& name, const std::string& where) {
  if (name == "gelu") return Activation::gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::gelu_tanh;
  if (name == "quick_gelu") return Activation::quick_gelu;
  if (name == "silu" || name == "swish") return Activation::silu;
  if (name == "relu") return Activation::relu;
  throw ModelError(where + ": unsupported activation \"" + name +
                   "\" (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, silu, swish, relu)");
}

inline const char* activation_name(Activation a) {
  switch (a) {
    case Activation::gelu: return "gelu";
    case Activation::gelu_tanh: return "gelu_pytorch_tanh";
    case Activation::quick_gelu: return "quick_gelu";
    case Activation::silu: return "silu";
    case Activation::relu: return "relu";
  }
  return "?";
}

inline torch::Tensor apply_activation(const torch::Tensor& x, Activation a) {
  switch (a) {
    case Activation::gelu: return torch::gelu(x);
    case Activation::gelu_tanh: return torch::gelu(x, "tanh");
    case Activation::quick_gelu: return x * torch::sigmoid(x * 1.702);
    case Activation::silu: return torch::silu(x);
    case Activation::relu: return torch::relu(x);
  }
  return x;
}

}  // namespace lli::nn
