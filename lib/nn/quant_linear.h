// Quantized linear layers (q8_0, q4_k; formats in nn/quant_kernels.h) on libtorch tensors:
// quantizing a float weight, the checkpoint layout of a quantized weight, and y = x W^T + b.
//
// Checkpoint layout (lli-quantize writes it, the loaders read it): a quantized `X.weight` keeps
// its name and holds the format's payload; its other arrays sit beside it, and the safetensors
// metadata names the format (kQuantMetadataKey = "q8_0" or "q4_k"):
//   q8_0: X.weight I8 [N, K], X.weight_scale F16 [N, K/32]
//   q4_k: X.weight U8 [N, K/2], X.weight_scale U8 [N, K/32], X.weight_min U8 [N, K/32],
//         X.weight_row F32 [N, 2]
// (fp16 scales are stored as F16 tensors: the bits are the format's uint16 d.)
//
// Compute: few rows (decoding, M <= kQuantGemvMaxRows) run the integer kernels of
// quant_kernels.h over the output rows split between libtorch's threads; more rows (prefill)
// dequantize the weight to the activations' dtype (a reused buffer) and use torch::linear
// (oneDNN), which is faster there than an int8 GEMM of our own.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lli/tensor_io.h"
#include "nn/quant_kernels.h"

namespace lli::nn {

constexpr const char* kQuantMetadataKey = "lli.quantization";
constexpr std::int64_t kQuantGemvMaxRows = 4;

struct QuantWeight {
  quant::QType type = quant::QType::q8_0;
  std::int64_t N = 0, K = 0;
  torch::Tensor qs, d, sc, mn, row;  // CPU, contiguous; unused ones undefined
  quant::QMatrix view() const;
  std::int64_t nbytes() const;  // bytes of all arrays
};

// Whether a checkpoint tensor name is one of the arrays beside a quantized weight (X.weight_scale,
// _min, _row): they keep their dtype whatever the compute dtype.
bool is_quant_array_name(const std::string& name);

// The names of a quantized weight's arrays beside `weight_key` ("X.weight"), payload first.
std::vector<std::string> quant_tensor_names(quant::QType t, const std::string& weight_key);

// Quantizes w [N, K] (f32 or bf16, CPU; K % 32 == 0) over libtorch's threads.
QuantWeight quantize_weight(const torch::Tensor& w, quant::QType t);

// W as [N, K] in `dtype` (f32 or bf16).
torch::Tensor dequantize_weight(const QuantWeight& w, torch::ScalarType dtype);

// The arrays under their checkpoint names (see above) for writing.
std::vector<std::pair<std::string, torch::Tensor>> quant_tensors(const QuantWeight& w, const std::string& weight_key);

// x: [..., K] f32 or bf16 CPU; b: [N] or undefined -> [..., N] in x's dtype.
torch::Tensor quant_linear(const torch::Tensor& x, const QuantWeight& w, const torch::Tensor& b);

// Several weights with the same input width applied to the same x (a layer's q/k/v projections,
// gate and up): the same outputs as quant_linear on each, but with few rows x is quantized once and
// all the weights' rows run in one parallel region (one barrier instead of one per weight).
std::vector<torch::Tensor> quant_linear_group(const torch::Tensor& x, const std::vector<const QuantWeight*>& ws,
                                              const std::vector<torch::Tensor>& bs);

// ---- models --------------------------------------------------------------------------------

struct QuantizeReport {
  int linears = 0;                                  // weights quantized
  std::int64_t float_bytes = 0, quant_bytes = 0;    // their size before and after
};

// Quantizes the weight of every nn::Linear under `root` whose full module name `select` accepts
// (and whose input width is a multiple of 32): the layer then computes with the quantized weight,
// its `weight` becomes a zero-stride view of its shape, and the float weight's memory is released
// (mapped checkpoint pages dropped from RSS).
QuantizeReport quantize_linears(torch::nn::Module& root, quant::QType t,
                                const std::function<bool(const std::string&)>& select);

// Loading a quantized checkpoint: every `<prefix><module>.weight` of `tensors` that has a
// `.weight_scale` beside it is validated against its Linear under `root` (format = `format`, the
// checkpoint's metadata; dtypes and shapes as the layout above requires for that Linear's [N, K])
// and attached to it; its arrays leave `tensors`. Returns the module keys ("<module>.weight")
// attached, for the binder's optional keys. ModelError naming `source` and the tensor otherwise
// (also for quantized tensors without a matching Linear, or without `format`).
std::vector<std::string> attach_quantized_linears(torch::nn::Module& root, TensorMap& tensors, const std::string& prefix,
                                                  const std::string& format, const std::string& source,
                                                  torch::ScalarType dtype);

}  // namespace lli::nn
