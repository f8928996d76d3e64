// Bridge between safetensors and libtorch, and the strict weight binder.
#pragma once

#include <torch/types.h>
#include <torch/nn/module.h>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lli/safetensors.h"

namespace lli {

using TensorMap = std::map<std::string, torch::Tensor>;

// A CPU tensor viewing the mapped data in place (no copy) when the data is suitably aligned,
// otherwise a copy. The mapping stays alive as long as the tensor. Treat it as read-only
// (the mapping is private copy-on-write: an accidental write never reaches the file).
torch::Tensor to_torch(const st::TensorRef& ref);

// The safetensors dtype of a libtorch dtype (F64, F32, F16, BF16, I64, ..., BOOL); RuntimeError
// for the others.
st::DType to_st_dtype(torch::ScalarType t);

// All tensors of a checkpoint (optionally only names starting with `prefix`, which is stripped).
TensorMap load_tensors(const st::Checkpoint& ckpt, const std::string& prefix = "");

// Writes tensors (contiguous CPU copies are made as needed) atomically.
void save_tensors(const std::filesystem::path& path, const TensorMap& tensors,
                  const std::map<std::string, std::string>& metadata = {});

struct BindOptions {
  std::optional<torch::ScalarType> dtype;  // convert floating tensors to this dtype; none = keep
  std::optional<torch::Device> device;     // move to this device; none = keep (CPU, in place)
  // Renames applied to checkpoint keys before lookup: each pair (from_prefix, to_prefix) rewrites
  // a key that starts with from_prefix. Applied in order, first match wins.
  std::vector<std::pair<std::string, std::string>> renames;
  std::string prefix;              // only checkpoint keys under this prefix (stripped) are bound
  bool ignore_unexpected = false;  // keys in the checkpoint that the module lacks
  std::vector<std::string> optional_keys;  // module keys that may be missing (e.g. buffers)
  std::string source;              // checkpoint path for messages
};

// Fills every parameter and buffer of `module` (by its full dotted name) from `tensors`.
// Throws ModelError listing every missing key, unexpected key and shape mismatch together.
// Modules must be built with placeholder tensors of the right shapes (see nn/layers.h);
// binding replaces their data (set_data), so no weight memory is touched at construction.
void bind_weights(torch::nn::Module& module, const TensorMap& tensors, const BindOptions& opts = {});

}  // namespace lli
