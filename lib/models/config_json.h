// Typed reads of a model's config.json with defaults: a key that is absent or null takes the
// default (transformers' configs list only non-default values); a key of the wrong type is a
// ModelError naming the file and the JSON path.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace lli::models {

// Reads and parses a JSON file; ModelError "<path>: ..." when missing or malformed.
nlohmann::json read_json_file(const std::filesystem::path& path);

class ConfigReader {
 public:
  // `source`: the file name for messages; `path`: the JSON path of `j` ("" for the root).
  ConfigReader(const nlohmann::json& j, std::string source, std::string path = "");

  bool has(const std::string& key) const;  // present and not null
  std::int64_t get_int(const std::string& key, std::int64_t def) const;
  double get_double(const std::string& key, double def) const;
  bool get_bool(const std::string& key, bool def) const;
  // n numbers: a JSON array of n numbers, or one number repeated n times (image_mean / image_std).
  std::vector<double> get_doubles(const std::string& key, std::size_t n, const std::vector<double>& def) const;
  std::string get_string(const std::string& key, const std::string& def) const;
  // ModelError "<where(key)>: must be positive, got v" unless v > 0 (v: the parsed or default value).
  void require_positive(const std::string& key, std::int64_t v) const;
  const nlohmann::json& at(const std::string& key) const;  // must exist (has(key))
  ConfigReader child(const std::string& key) const;         // object; empty object when absent
  std::string where(const std::string& key) const;          // "config.json: text_config.hidden_size"
  const nlohmann::json& json() const { return j_; }
  const std::string& source() const { return source_; }

 private:
  const nlohmann::json& j_;
  std::string source_, path_;
};

}  // namespace lli::models
