// The torch-free --device / --dtype choices (lli/device.h) as libtorch types, for the pipelines.
#pragma once

#include <torch/types.h>

#include "lli/device.h"

namespace lli {

// A resolved choice (resolve_dtype): automatic maps to fp32.
inline torch::Dtype to_torch_dtype(DTypeChoice d) {
  switch (d) {
    case DTypeChoice::bf16: return torch::kBFloat16;
    case DTypeChoice::f16: return torch::kHalf;
    default: return torch::kFloat32;
  }
}

inline torch::Device to_torch_device(const DeviceChoice& d) {
  return d.cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(d.index)) : torch::Device(torch::kCPU);
}

}  // namespace lli
