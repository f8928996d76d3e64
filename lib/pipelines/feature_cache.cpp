#include "pipelines/feature_cache.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <sstream>

#include "io/bounded_parse.h"
#include "lli/error.h"
#include "lli/fs.h"

namespace lli::pipelines {

namespace {

[[noreturn]] void cache_error(const std::string& source, const std::string& what, const std::string& why) {
  throw InputError(source + ": not a usable " + what + ": " + why);
}

std::string f32_bytes(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), static_cast<std::size_t>(c.numel()) * 4);
}

}  // namespace

std::string feature_cache_bytes(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  h["__metadata__"] = metadata;
  std::string data;
  for (const auto& [name, t] : tensors) {
    const std::string b = f32_bytes(t);
    h[name] = {{"dtype", "F32"}, {"shape", t.sizes().vec()}, {"data_offsets", {data.size(), data.size() + b.size()}}};
    data += b;
  }
  std::string head = h.dump();
  head.append((8 - head.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((head.size() >> (8 * i)) & 0xff);
  return out + head + data;
}

std::map<std::string, std::string> parse_feature_cache(std::string_view bytes, const std::string& source,
                                                       const FeatureCacheSpec& spec,
                                                       std::map<std::string, torch::Tensor>& tensors) {
  auto fail = [&](const std::string& why) { cache_error(source, spec.what, why); };
  if (bytes.size() < 8) fail("too short");
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)])) << (8 * i);
  if (n > bytes.size() - 8 || n > 100000000) fail("header length " + std::to_string(n) + " exceeds the data");
  nlohmann::json h;
  try {
    h = parse_json_bounded(bytes.substr(8, n), "header", ExitCode::bad_input);  // depth-bounded, no duplicates
  } catch (const InputError& e) {
    fail(e.what());
  }
  if (!h.is_object()) fail("the header is not a JSON object");
  std::map<std::string, std::string> meta;
  if (auto it = h.find("__metadata__"); it != h.end()) {
    if (!it->is_object()) fail("__metadata__ is not an object");
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string()) fail("metadata '" + k.substr(0, 40) + "' is not a string");
      meta[k] = v.get<std::string>();
    }
  }
  auto get = [&](const std::string& key) -> std::string {
    auto it = meta.find(key);
    if (it == meta.end()) fail("no metadata '" + key + "'");
    return it->second;
  };
  if (get("format") != spec.format) fail("format '" + get("format").substr(0, 60) + "' (expected " + spec.format + ")");
  if (get("version") != spec.version) fail("version '" + get("version").substr(0, 60) + "' (expected " + spec.version + ")");
  if (get("fingerprint") != spec.fingerprint) fail("it was computed by another model (fingerprint differs)");
  if (h.size() != spec.shapes.size() + (h.contains("__metadata__") ? 1u : 0u))
    fail("expected exactly the tensors of this model (" + std::to_string(spec.shapes.size()) + ")");
  const std::size_t data0 = 8 + static_cast<std::size_t>(n);
  const std::size_t data_size = bytes.size() - data0;
  std::size_t total = 0;
  for (const auto& [name, shape] : spec.shapes) {
    if (!h.contains(name) || !h[name].is_object()) fail("no tensor '" + name + "'");
    const auto& te = h[name];
    if (te.value("dtype", nlohmann::json()) != "F32") fail(name + " must be F32");
    if (!te.contains("shape") || te["shape"] != nlohmann::json(shape))
      fail(name + " shape " + (te.contains("shape") ? te["shape"].dump().substr(0, 60) : std::string("?")) + " (model: " +
           nlohmann::json(shape).dump() + ")");
    std::uint64_t numel = 1;
    for (auto s : shape) numel *= static_cast<std::uint64_t>(s);
    const auto& off = te.value("data_offsets", nlohmann::json());
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(name + ": bad data_offsets");
    const auto a = off[0].get<std::uint64_t>(), b = off[1].get<std::uint64_t>();
    if (b < a || b - a != numel * 4 || b > data_size) fail("data size does not match the shape");
    total += static_cast<std::size_t>(numel) * 4;
    auto t = torch::empty(shape, torch::kFloat32);
    std::memcpy(t.data_ptr(), bytes.data() + data0 + a, static_cast<std::size_t>(numel) * 4);
    if (!torch::isfinite(t).all().item<bool>()) fail(name + ": non-finite values");
    tensors[name] = t;
  }
  if (total != data_size) fail("data size does not match the shape");
  return meta;
}

int feature_cache_positive_int(const std::map<std::string, std::string>& meta, const std::string& key,
                               const std::string& source, const std::string& what) {
  auto it = meta.find(key);
  if (it == meta.end()) cache_error(source, what, "no metadata '" + key + "'");
  const std::string& s = it->second;
  try {
    std::size_t pos = 0;
    const int v = std::stoi(s, &pos);
    if (pos == s.size() && v > 0) return v;
  } catch (const std::exception&) {
  }
  cache_error(source, what, "metadata '" + key + "' = '" + s.substr(0, 40) + "' is not a positive integer");
}

std::string model_fingerprint(const std::filesystem::path& config_json, const std::vector<torch::Tensor>& weights) {
  std::ifstream in(config_json, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string fp = ss.str();
  for (const auto& w : weights) fp += f32_bytes(w);
  return sha256_hex(fp);
}

}  // namespace lli::pipelines
