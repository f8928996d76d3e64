// Ref: llama.cpp ggml_mul_mat with quantized weights (activations quantized per block for the
// vector path; dequantized tiles for large batches, as ggml's BLAS path does).
#include "nn/quant_linear.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/quote.h"
#include "lli/error.h"
#include "lli/safetensors.h"
#include "nn/layers.h"
#include "nn/parallel_rows.h"

namespace lli::nn {

namespace {

const void* ptr(const torch::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

}  // namespace

quant::QMatrix QuantWeight::view() const {
  quant::QMatrix m{};
  m.type = type;
  m.N = N;
  m.K = K;
  m.qs = ptr(qs);
  m.d = static_cast<const std::uint16_t*>(ptr(d));
  m.sc = static_cast<const std::uint8_t*>(ptr(sc));
  m.mn = static_cast<const std::uint8_t*>(ptr(mn));
  m.row = static_cast<const float*>(ptr(row));
  return m;
}

std::int64_t QuantWeight::nbytes() const {
  std::int64_t n = 0;
  for (const auto* t : {&qs, &d, &sc, &mn, &row})
    if (t->defined()) n += t->numel() * t->element_size();
  return n;
}

bool is_quant_array_name(const std::string& name) {
  for (const char* suffix : {".weight_scale", ".weight_min", ".weight_row"}) {
    const std::size_t n = std::strlen(suffix);
    if (name.size() > n && name.compare(name.size() - n, n, suffix) == 0) return true;
  }
  return false;
}

std::vector<std::string> quant_tensor_names(quant::QType t, const std::string& weight_key) {
  if (t == quant::QType::q8_0) return {weight_key, weight_key + "_scale"};
  return {weight_key, weight_key + "_scale", weight_key + "_min", weight_key + "_row"};
}

QuantWeight quantize_weight(const torch::Tensor& w0, quant::QType t) {
  if (w0.dim() != 2 || !w0.device().is_cpu() ||
      (w0.scalar_type() != torch::kFloat32 && w0.scalar_type() != torch::kBFloat16))
    throw RuntimeError("quantize: expected a 2-D f32 or bf16 CPU weight, got " + c10::str(w0.sizes()) + " " +
                       c10::toString(w0.scalar_type()));
  const auto w = w0.contiguous();
  QuantWeight q;
  q.type = t;
  q.N = w.size(0);
  q.K = w.size(1);
  if (q.K % quant::kBlock != 0)
    throw RuntimeError("quantize: the input width " + std::to_string(q.K) + " is not a multiple of " +
                       std::to_string(quant::kBlock));
  const auto u8 = torch::TensorOptions().dtype(torch::kUInt8);
  const auto G = q.K / quant::kBlock;
  const bool bf16 = w.scalar_type() == torch::kBFloat16;
  if (t == quant::QType::q8_0) {
    q.qs = torch::empty({q.N, q.K}, torch::kInt8);
    q.d = torch::empty({q.N, G}, torch::kFloat16);
    auto* qs = q.qs.data_ptr<std::int8_t>();
    auto* d = static_cast<std::uint16_t*>(q.d.data_ptr());
    parallel_rows(q.N, 16, [&](std::int64_t n0, std::int64_t n1) {
      if (bf16)
        quant::quantize_q8_0_bf16(static_cast<const std::uint16_t*>(w.data_ptr()), q.K, n0, n1, qs, d);
      else
        quant::quantize_q8_0(w.data_ptr<float>(), q.K, n0, n1, qs, d);
    });
  } else {
    q.qs = torch::empty({q.N, q.K / 2}, u8);
    q.sc = torch::empty({q.N, G}, u8);
    q.mn = torch::empty({q.N, G}, u8);
    q.row = torch::empty({q.N, 2}, torch::kFloat32);
    auto *qs = q.qs.data_ptr<std::uint8_t>(), *sc = q.sc.data_ptr<std::uint8_t>(), *mn = q.mn.data_ptr<std::uint8_t>();
    auto* row = q.row.data_ptr<float>();
    parallel_rows(q.N, 16, [&](std::int64_t n0, std::int64_t n1) {
      if (bf16)
        quant::quantize_q4_k_bf16(static_cast<const std::uint16_t*>(w.data_ptr()), q.K, n0, n1, qs, sc, mn, row);
      else
        quant::quantize_q4_k(w.data_ptr<float>(), q.K, n0, n1, qs, sc, mn, row);
    });
  }
  return q;
}

torch::Tensor dequantize_weight(const QuantWeight& w, torch::ScalarType dtype) {
  auto out = torch::empty({w.N, w.K}, torch::TensorOptions().dtype(dtype));
  const auto m = w.view();
  if (dtype == torch::kBFloat16) {
    auto* o = static_cast<std::uint16_t*>(out.data_ptr());
    parallel_rows(w.N, 16, [&](std::int64_t n0, std::int64_t n1) { quant::dequantize_rows_bf16(m, n0, n1, o + n0 * w.K); });
  } else if (dtype == torch::kFloat32) {
    auto* o = out.data_ptr<float>();
    parallel_rows(w.N, 16, [&](std::int64_t n0, std::int64_t n1) { quant::dequantize_rows(m, n0, n1, o + n0 * w.K); });
  } else {
    throw RuntimeError("dequantize: unsupported dtype " + std::string(c10::toString(dtype)) + " (f32 or bf16)");
  }
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> quant_tensors(const QuantWeight& w, const std::string& weight_key) {
  const auto names = quant_tensor_names(w.type, weight_key);
  if (w.type == quant::QType::q8_0) return {{names[0], w.qs}, {names[1], w.d}};
  return {{names[0], w.qs}, {names[1], w.sc}, {names[2], w.mn}, {names[3], w.row}};
}

namespace {

void check_quant_input(const torch::Tensor& x, const QuantWeight& w) {
  if (!x.device().is_cpu() || (x.scalar_type() != torch::kFloat32 && x.scalar_type() != torch::kBFloat16))
    throw RuntimeError("quantized linear: expected f32 or bf16 CPU activations, got " +
                       std::string(c10::toString(x.scalar_type())));
  if (x.size(-1) != w.K)
    throw RuntimeError("quantized linear: input has " + std::to_string(x.size(-1)) + " features, the weight " +
                       std::to_string(w.K));
}

// The vector path of quant_linear_group: x quantized once, every weight's output rows in one
// parallel region (each thread takes an equal share of the rows of all the weights together).
std::vector<torch::Tensor> quant_gemv_group(const torch::Tensor& x, const std::vector<const QuantWeight*>& ws,
                                            const std::vector<torch::Tensor>& bs) {
  const std::int64_t K = ws[0]->K, M = x.numel() / K;
  auto x2 = x.reshape({M, K}).contiguous();  // [M, K]
  quant::QActs acts;
  if (x2.scalar_type() == torch::kBFloat16)
    quant::quantize_acts_bf16(static_cast<const std::uint16_t*>(x2.data_ptr()), M, K, K, &acts);
  else
    quant::quantize_acts(x2.data_ptr<float>(), M, K, K, &acts);
  const std::size_t nw = ws.size();
  // fp32 sums in a buffer kept by the calling thread; each worker adds the bias to its own rows and
  // rounds them into the output (the same numbers as y.add_(b.float()).to(x.dtype()), without two
  // more passes and a fresh tensor per call).
  struct Part {
    quant::QMatrix m;
    std::int64_t first;  // row of the concatenation where this weight starts
    float* y;            // [M, N] sums
    const float* b;
    void* out;
  };
  std::int64_t total = 0;
  for (const auto* w : ws) total += w->N;
  static thread_local std::vector<float> ybuf;
  ybuf.resize(static_cast<std::size_t>(M * total));
  std::vector<torch::Tensor> outs, biases;
  std::vector<Part> parts;
  std::int64_t first = 0;
  for (std::size_t i = 0; i < nw; ++i) {
    outs.push_back(torch::empty({M, ws[i]->N}, x2.options()));  // [M, N_i]
    biases.push_back(bs[i].defined() ? bs[i].to(torch::kFloat32).contiguous() : bs[i]);
    parts.push_back({ws[i]->view(), first, ybuf.data() + M * first,
                     biases.back().defined() ? biases.back().data_ptr<float>() : nullptr, outs.back().data_ptr()});
    first += ws[i]->N;
  }
  const bool out_bf16 = x2.scalar_type() == torch::kBFloat16;
  if (M > 0)
    parallel_rows(total, 16, [&](std::int64_t r0, std::int64_t r1) {
      for (const auto& p : parts) {
        const std::int64_t N = p.m.N, n0 = std::max<std::int64_t>(r0 - p.first, 0),
                           n1 = std::min<std::int64_t>(r1 - p.first, N);
        if (n0 >= n1) continue;
        quant::matmul_rows(p.m, acts, n0, n1, p.y, N);
        for (std::int64_t r = 0; r < M; ++r)
          for (std::int64_t n = n0; n < n1; ++n) {
            const float v = p.b ? p.y[r * N + n] + p.b[n] : p.y[r * N + n];
            if (out_bf16)
              static_cast<c10::BFloat16*>(p.out)[r * N + n] = c10::BFloat16(v);  // round to nearest even
            else
              static_cast<float*>(p.out)[r * N + n] = v;
          }
      }
    });
  for (std::size_t i = 0; i < nw; ++i) {
    auto sizes = x.sizes().vec();
    sizes.back() = ws[i]->N;
    outs[i] = outs[i].view(sizes);
  }
  return outs;
}

}  // namespace

torch::Tensor quant_linear(const torch::Tensor& x, const QuantWeight& w, const torch::Tensor& b) {
  return quant_linear_group(x, {&w}, {b})[0];
}

std::vector<torch::Tensor> quant_linear_group(const torch::Tensor& x, const std::vector<const QuantWeight*>& ws,
                                              const std::vector<torch::Tensor>& bs) {
  if (ws.empty() || ws.size() != bs.size())
    throw RuntimeError("quantized linear group: " + std::to_string(ws.size()) + " weights and " +
                       std::to_string(bs.size()) + " biases");
  for (const auto* w : ws) check_quant_input(x, *w);
  const std::int64_t M = x.numel() / ws[0]->K;
  if (M <= kQuantGemvMaxRows) return quant_gemv_group(x, ws, bs);
  // Prefill: one dequantized copy of each W (the allocator reuses the block call after call), oneDNN GEMM.
  std::vector<torch::Tensor> outs;
  for (std::size_t i = 0; i < ws.size(); ++i) outs.push_back(torch::linear(x, dequantize_weight(*ws[i], x.scalar_type()), bs[i]));
  return outs;
}

namespace {

// The float weight of a quantized Linear: its shape, no memory.
void drop_float_weight(LinearImpl& l, std::int64_t N, std::int64_t K, torch::ScalarType dtype) {
  torch::NoGradGuard ng;
  const auto& w = l.weight;
  if (w.defined() && w.device().is_cpu() && w.numel() > 0 && w.is_contiguous())
    st::release_mapped_pages(w.data_ptr(), static_cast<std::size_t>(w.numel()) * w.element_size());
  l.weight.set_data(torch::zeros({1}, torch::TensorOptions().dtype(dtype)).expand({N, K}));
}

std::string shape_str(torch::IntArrayRef s) { return c10::str(s); }

}  // namespace

QuantizeReport quantize_linears(torch::nn::Module& root, quant::QType t,
                                const std::function<bool(const std::string&)>& select) {
  QuantizeReport r;
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    auto* l = dynamic_cast<LinearImpl*>(item.value().get());
    if (!l || l->qweight || !select(item.key()) || l->in_features() % quant::kBlock != 0) continue;
    auto q = std::make_shared<QuantWeight>(quantize_weight(l->weight, t));
    r.float_bytes += l->weight.numel() * l->weight.element_size();
    r.quant_bytes += q->nbytes();
    ++r.linears;
    drop_float_weight(*l, q->N, q->K, l->weight.scalar_type());
    l->qweight = std::move(q);
  }
  return r;
}

std::vector<std::string> attach_quantized_linears(torch::nn::Module& root, TensorMap& tensors, const std::string& prefix,
                                                  const std::string& format, const std::string& source,
                                                  torch::ScalarType dtype) {
  std::vector<std::string> attached;
  // Which checkpoint weights are quantized: those with a scale beside them.
  std::vector<std::string> keys;
  for (const auto& [key, t] : tensors)
    if (key.size() > 13 && key.compare(key.size() - 13, 13, ".weight_scale") == 0) keys.push_back(key.substr(0, key.size() - 6));
  if (keys.empty()) return attached;
  auto fail = [&](const std::string& tensor, const std::string& what) {
    throw ModelError(source + ": tensor " + quote_excerpt(tensor) + ": " + what);
  };
  quant::QType type;
  if (!quant::parse_qtype(format, &type))
    fail(keys[0] + "_scale", format.empty() ? std::string("quantized weights but no '") + kQuantMetadataKey +
                                                  "' in the safetensors metadata"
                                            : "unknown quantization format " + quote_excerpt(format) +
                                                  " in the metadata (q8_0 or q4_k)");
  std::map<std::string, LinearImpl*> linears;
  for (const auto& item : root.named_modules("", false))
    if (auto* l = dynamic_cast<LinearImpl*>(item.value().get())) linears[item.key()] = l;
  for (const auto& wkey : keys) {
    if (wkey.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string module = wkey.substr(prefix.size(), wkey.size() - prefix.size() - 7);  // minus ".weight"
    auto it = linears.find(module);
    if (it == linears.end()) fail(wkey + "_scale", "quantized weight of no linear layer of this model");
    LinearImpl& l = *it->second;
    const std::int64_t N = l.out_features(), K = l.in_features(), G = K / quant::kBlock;
    if (K % quant::kBlock != 0) fail(wkey, "quantized, but the layer's input width " + std::to_string(K) +
                                             " is not a multiple of 32");
    const auto names = quant_tensor_names(type, wkey);
    struct Want {
      torch::ScalarType dtype;
      std::vector<std::int64_t> shape;
    };
    std::vector<Want> want;
    if (type == quant::QType::q8_0)
      want = {{torch::kInt8, {N, K}}, {torch::kFloat16, {N, G}}};
    else
      want = {{torch::kUInt8, {N, K / 2}}, {torch::kUInt8, {N, G}}, {torch::kUInt8, {N, G}}, {torch::kFloat32, {N, 2}}};
    std::vector<torch::Tensor> arrays;
    for (std::size_t i = 0; i < names.size(); ++i) {
      auto t = tensors.find(names[i]);
      if (t == tensors.end()) fail(names[i], std::string("missing (a ") + format + " weight has " +
                                                std::to_string(names.size()) + " arrays)");
      const auto& a = t->second;
      if (a.scalar_type() != want[i].dtype || a.sizes() != torch::IntArrayRef(want[i].shape))
        fail(names[i], std::string(c10::toString(a.scalar_type())) + " " + shape_str(a.sizes()) + ", expected " +
                           c10::toString(want[i].dtype) + " " + shape_str(want[i].shape) + " for a " + format +
                           " weight of a [" + std::to_string(N) + ", " + std::to_string(K) + "] linear");
      arrays.push_back(a.contiguous());
    }
    auto q = std::make_shared<QuantWeight>();
    q->type = type;
    q->N = N;
    q->K = K;
    q->qs = arrays[0];
    if (type == quant::QType::q8_0) {
      q->d = arrays[1];
    } else {
      q->sc = arrays[1];
      q->mn = arrays[2];
      q->row = arrays[3];
      if (!torch::isfinite(q->row).all().item<bool>() || (q->row < 0).any().item<bool>())
        fail(names[3], "row scales must be finite and >= 0");
    }
    for (const auto& n : names) tensors.erase(n);
    drop_float_weight(l, N, K, dtype);
    l.qweight = std::move(q);
    attached.push_back(module + ".weight");
  }
  return attached;
}

}  // namespace lli::nn
