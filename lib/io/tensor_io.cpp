// safetensors <-> libtorch bridge and the strict weight binder.
// Ref: torch.nn.Module.load_state_dict(strict=True) (missing / unexpected / size mismatch, all reported).
#include "lli/tensor_io.h"

#include <cstdint>
#include <cstring>
#include <set>

#include "core/cpu_allocator.h"
#include "core/quote.h"
#include "lli/error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; lli maps it in place and supports little-endian hosts only"
#endif

namespace lli {

namespace {

torch::ScalarType to_scalar_type(st::DType d) {
  switch (d) {
    case st::DType::F64: return torch::kFloat64;
    case st::DType::F32: return torch::kFloat32;
    case st::DType::F16: return torch::kFloat16;
    case st::DType::BF16: return torch::kBFloat16;
    case st::DType::I64: return torch::kInt64;
    case st::DType::I32: return torch::kInt32;
    case st::DType::I16: return torch::kInt16;
    case st::DType::I8: return torch::kInt8;
    case st::DType::U8: return torch::kUInt8;
    case st::DType::BOOL: return torch::kBool;
  }
  return torch::kFloat32;
}

bool from_scalar_type(torch::ScalarType s, st::DType* out) {
  switch (s) {
    case torch::kFloat64: *out = st::DType::F64; return true;
    case torch::kFloat32: *out = st::DType::F32; return true;
    case torch::kFloat16: *out = st::DType::F16; return true;
    case torch::kBFloat16: *out = st::DType::BF16; return true;
    case torch::kInt64: *out = st::DType::I64; return true;
    case torch::kInt32: *out = st::DType::I32; return true;
    case torch::kInt16: *out = st::DType::I16; return true;
    case torch::kInt8: *out = st::DType::I8; return true;
    case torch::kUInt8: *out = st::DType::U8; return true;
    case torch::kBool: *out = st::DType::BOOL; return true;
    default: return false;
  }
}

// The dtype as the checkpoint names it (F32, I32, ...).
std::string st_dtype_name(torch::ScalarType s) {
  st::DType d;
  return from_scalar_type(s, &d) ? st::dtype_name(d) : std::string(c10::toString(s));
}

// What a module tensor accepts from a checkpoint: any float for a float placeholder (converted
// at bind), any integer for an integer one, BOOL for BOOL. An I32 where weights are expected is
// refused here, at load, not at the first matmul ("self and mat2 must have the same dtype").
const char* dtype_kind(torch::ScalarType s) {
  if (s == torch::kBool) return "BOOL";
  if (c10::isFloatingType(s)) return "a floating-point dtype (F32, F16, BF16 or F64)";
  if (c10::isIntegralType(s, /*includeBool=*/false)) return "an integer dtype (I64, I32, I16, I8 or U8)";
  return "?";
}

std::string shape_str(torch::IntArrayRef s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

// A tensor name from a checkpoint in a message: control characters escaped, bounded.
std::string shown(const std::string& name) { return one_line(name, 200); }

// "N what: a, b, c ... and M more" with at most `cap` items.
std::string listing(const std::vector<std::string>& items, const char* singular, const char* plural,
                    std::size_t cap = 20) {
  std::string s = std::to_string(items.size()) + " " + (items.size() == 1 ? singular : plural) + ": ";
  for (std::size_t i = 0; i < items.size() && i < cap; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > cap) s += " ... and " + std::to_string(items.size() - cap) + " more";
  return s;
}

}  // namespace

st::DType to_st_dtype(torch::ScalarType t) {
  st::DType d;
  if (!from_scalar_type(t, &d))
    throw RuntimeError("dtype " + std::string(c10::toString(t)) + " has no safetensors equivalent");
  return d;
}

torch::Tensor to_torch(const st::TensorRef& ref) {
  const auto dtype = to_scalar_type(ref.dtype);
  const auto opts = torch::TensorOptions().dtype(dtype).device(torch::kCPU);
  std::vector<std::int64_t> shape(ref.shape.begin(), ref.shape.end());
  if (ref.nbytes == 0) return torch::empty(shape, opts);
  if (!ref.data) throw ModelError(ref.file + ": tensor " + quote_excerpt(ref.name) + ": no data");
  if (ref.dtype == st::DType::BOOL) {
    // torch's bool must be 0 or 1; anything else is undefined behaviour in kernels.
    const auto* b = static_cast<const std::uint8_t*>(ref.data);
    for (std::size_t i = 0; i < ref.nbytes; ++i)
      if (b[i] > 1)
        throw ModelError(ref.file + ": tensor " + quote_excerpt(ref.name) + ": BOOL byte " + std::to_string(b[i]) + " at index " +
                         std::to_string(i) + " is not 0 or 1");
  }
  const auto addr = reinterpret_cast<std::uintptr_t>(ref.data);
  if (addr % st::dtype_size(ref.dtype) != 0) {
    // Misaligned for its element type: copy (the only copy this function makes).
    torch::Tensor t = torch::empty(shape, opts);
    std::memcpy(t.data_ptr(), ref.data, ref.nbytes);
    return t;
  }
  auto owner = ref.owner;  // the deleter holds the mapping alive as long as the tensor's storage
  return torch::from_blob(
      const_cast<void*>(ref.data), shape, [owner](void*) mutable { owner.reset(); }, opts);
}

TensorMap load_tensors(const st::Checkpoint& ckpt, const std::string& prefix) {
  TensorMap out;
  for (const auto& [name, ref] : ckpt.all()) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    out.emplace(name.substr(prefix.size()), to_torch(ref));
  }
  return out;
}

void save_tensors(const std::filesystem::path& path, const TensorMap& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;  // contiguous CPU copies, alive until written
  std::vector<st::TensorData> data;
  keep.reserve(tensors.size());
  data.reserve(tensors.size());
  for (const auto& [name, t0] : tensors) {
    if (!t0.defined()) throw RuntimeError(path.string() + ": tensor " + quote_excerpt(name) + " is undefined");
    st::DType d;
    if (!from_scalar_type(t0.scalar_type(), &d))
      throw RuntimeError(path.string() + ": tensor " + quote_excerpt(name) + ": dtype " +
                         std::string(c10::toString(t0.scalar_type())) + " cannot be stored in safetensors by lli");
    torch::Tensor t = t0.detach().to(torch::kCPU).contiguous();
    keep.push_back(t);
    st::TensorData td;
    td.name = name;
    td.dtype = d;
    td.shape.assign(t.sizes().begin(), t.sizes().end());
    td.data = t.data_ptr();
    td.nbytes = static_cast<std::size_t>(t.numel()) * t.element_size();
    data.push_back(std::move(td));
  }
  st::write_file(path, data, metadata);
}

void bind_weights(torch::nn::Module& module, const TensorMap& tensors, const BindOptions& opts) {
  torch::NoGradGuard no_grad;
  const std::string source = opts.source.empty() ? std::string("<tensors>") : opts.source;

  // Checkpoint keys under the prefix, renamed to module names: module name -> (checkpoint key, tensor).
  std::map<std::string, std::pair<std::string, torch::Tensor>> ckpt;
  std::vector<std::string> conflicts;
  for (const auto& [key, t] : tensors) {
    if (key.compare(0, opts.prefix.size(), opts.prefix) != 0) continue;
    std::string name = key.substr(opts.prefix.size());
    for (const auto& [from, to] : opts.renames)
      if (name.compare(0, from.size(), from) == 0) {
        name = to + name.substr(from.size());
        break;
      }
    auto [it, inserted] = ckpt.emplace(name, std::make_pair(key, t));
    if (!inserted) conflicts.push_back(shown(it->second.first) + " and " + shown(key) + " both map to " + shown(name));
  }

  // Module entries by full dotted name (parameters, then buffers).
  std::vector<std::pair<std::string, torch::Tensor>> entries;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) entries.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) entries.emplace_back(b.key(), b.value());

  const std::set<std::string> optional(opts.optional_keys.begin(), opts.optional_keys.end());
  std::vector<std::string> missing, mismatched, unexpected, wrong_dtype;
  std::set<std::string> used;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> plan;  // (module tensor, checkpoint tensor)
  for (const auto& [name, param] : entries) {
    auto it = ckpt.find(name);
    if (it == ckpt.end()) {
      if (!optional.count(name)) missing.push_back(shown(name));
      continue;
    }
    used.insert(name);
    const torch::Tensor& t = it->second.second;
    if (!t.defined()) {
      missing.push_back(shown(name) + " (undefined tensor)");
      continue;
    }
    if (t.sizes() != param.sizes()) {
      mismatched.push_back(shown(name) + ": checkpoint " + shape_str(t.sizes()) + " vs model " + shape_str(param.sizes()));
      continue;
    }
    if (std::strcmp(dtype_kind(t.scalar_type()), dtype_kind(param.scalar_type())) != 0) {
      wrong_dtype.push_back(shown(it->second.first) + ": " + st_dtype_name(t.scalar_type()) + ", expected " +
                            dtype_kind(param.scalar_type()));
      continue;
    }
    plan.emplace_back(param, t);
  }
  if (!opts.ignore_unexpected)
    for (const auto& [name, kt] : ckpt)
      if (!used.count(name)) unexpected.push_back(shown(kt.first));

  if (!missing.empty() || !unexpected.empty() || !mismatched.empty() || !wrong_dtype.empty() || !conflicts.empty()) {
    std::string msg = source + ": checkpoint does not match the model:";
    bool first = true;
    auto add = [&](const std::vector<std::string>& items, const char* one, const char* many) {
      if (items.empty()) return;
      msg += (first ? " " : "; ") + listing(items, one, many);
      first = false;
    };
    add(missing, "missing key", "missing keys");
    add(unexpected, "unexpected key", "unexpected keys");
    add(mismatched, "shape mismatch", "shape mismatches");
    add(wrong_dtype, "tensor of the wrong dtype", "tensors of the wrong dtype");
    add(conflicts, "rename conflict", "rename conflicts");
    if (!opts.prefix.empty()) msg += " (checkpoint prefix " + quote_excerpt(opts.prefix) + ")";
    throw ModelError(msg);
  }

  // Everything matched: bind (only now, so a failed bind leaves the module untouched).
  CpuAllocatorNoCache no_cache;  // each replaced placeholder leaves RSS at once
  for (auto& [param, t0] : plan) {
    torch::Tensor t = t0;
    const bool convert_dtype = opts.dtype && t.is_floating_point() && t.scalar_type() != *opts.dtype;
    const bool move = opts.device && t.device() != *opts.device;
    if (convert_dtype && move)
      t = t.to(*opts.device, *opts.dtype);
    else if (convert_dtype)
      t = t.to(*opts.dtype);
    else if (move)
      t = t.to(*opts.device);
    // A converted / moved copy: the mapped source bytes are not needed in RAM any more.
    if (t.data_ptr() != t0.data_ptr() && t0.device().is_cpu()) st::release_mapped_pages(t0.data_ptr(), t0.nbytes());
    param.set_data(t);
  }
  // The module's constructor allocated its parameters before they were replaced here: those blocks
  // (fp32, the size of the whole model) would otherwise sit in the allocator's cache.
  cpu_allocator_release_cache();
}

}  // namespace lli
