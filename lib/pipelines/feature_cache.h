// Session-cache files of per-image model outputs (SAM's image embedding, OWL's image features):
// F32 tensors plus string metadata in the safetensors format, built and parsed in memory. The
// reader trusts nothing: bounded header parse, format / version / model fingerprint, the exact
// set of tensors with the shapes the loaded model expects, data offsets, finite values.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lli::pipelines {

// The bytes of a cache file: `tensors` converted to contiguous F32 CPU data, in the given order;
// `metadata` becomes __metadata__.
std::string feature_cache_bytes(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                const std::map<std::string, std::string>& metadata);

struct FeatureCacheSpec {
  std::string what;         // "SAM embedding", "OWL image features": for messages
  std::string format, version, fingerprint;  // metadata that must match
  std::map<std::string, std::vector<std::int64_t>> shapes;  // every tensor, exactly
};

// Parses bytes written by feature_cache_bytes. InputError "<source>: not a usable <what>: <why>".
// Returns the metadata; fills `tensors` (F32 CPU) by name.
std::map<std::string, std::string> parse_feature_cache(std::string_view bytes, const std::string& source,
                                                       const FeatureCacheSpec& spec,
                                                       std::map<std::string, torch::Tensor>& tensors);

// A metadata value that must be a positive integer (InputError as above otherwise).
int feature_cache_positive_int(const std::map<std::string, std::string>& meta, const std::string& key,
                               const std::string& source, const std::string& what);

// Model identity for cache keys: sha256 of config.json's text and the bytes of a few weights.
std::string model_fingerprint(const std::filesystem::path& config_json, const std::vector<torch::Tensor>& weights);

}  // namespace lli::pipelines
