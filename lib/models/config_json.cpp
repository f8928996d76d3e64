#include "models/config_json.h"

#include <fstream>
#include <sstream>

#include "io/bounded_parse.h"
#include "lli/error.h"

namespace lli::models {

namespace {
const nlohmann::json& empty_object() {
  static const nlohmann::json e = nlohmann::json::object();
  return e;
}
}  // namespace

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError(path.string() + ": cannot open (missing file?)");
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = parse_json_bounded(ss.str(), path.string(), ExitCode::model, "not valid JSON: ");
  if (!j.is_object()) throw ModelError(path.string() + ": expected a JSON object at the top level");
  return j;
}

ConfigReader::ConfigReader(const nlohmann::json& j, std::string source, std::string path)
    : j_(j.is_object() ? j : empty_object()), source_(std::move(source)), path_(std::move(path)) {}

std::string ConfigReader::where(const std::string& key) const {
  return source_ + ": " + (path_.empty() ? key : path_ + "." + key);
}

bool ConfigReader::has(const std::string& key) const {
  auto it = j_.find(key);
  return it != j_.end() && !it->is_null();
}

const nlohmann::json& ConfigReader::at(const std::string& key) const {
  if (!has(key)) throw ModelError(where(key) + ": missing");
  return j_.at(key);
}

std::int64_t ConfigReader::get_int(const std::string& key, std::int64_t def) const {
  if (!has(key)) return def;
  const auto& v = j_.at(key);
  if (v.is_number_integer()) return v.get<std::int64_t>();
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (d == static_cast<double>(static_cast<std::int64_t>(d))) return static_cast<std::int64_t>(d);
  }
  throw ModelError(where(key) + ": expected an integer, got " + json_excerpt(v));
}

double ConfigReader::get_double(const std::string& key, double def) const {
  if (!has(key)) return def;
  const auto& v = j_.at(key);
  if (v.is_number()) return v.get<double>();
  throw ModelError(where(key) + ": expected a number, got " + json_excerpt(v));
}

std::vector<double> ConfigReader::get_doubles(const std::string& key, std::size_t n,
                                              const std::vector<double>& def) const {
  if (!has(key)) return def;
  const auto& v = j_.at(key);
  const auto bad = [&] { return ModelError(where(key) + ": expected " + std::to_string(n) + " numbers, got " + json_excerpt(v)); };
  if (v.is_number()) return std::vector<double>(n, v.get<double>());
  if (!v.is_array() || v.size() != n) throw bad();
  std::vector<double> out;
  for (const auto& x : v) {
    if (!x.is_number()) throw bad();
    out.push_back(x.get<double>());
  }
  return out;
}

void ConfigReader::require_positive(const std::string& key, std::int64_t v) const {
  if (v <= 0) throw ModelError(where(key) + ": must be positive, got " + std::to_string(v));
}

bool ConfigReader::get_bool(const std::string& key, bool def) const {
  if (!has(key)) return def;
  const auto& v = j_.at(key);
  if (v.is_boolean()) return v.get<bool>();
  throw ModelError(where(key) + ": expected true or false, got " + json_excerpt(v));
}

std::string ConfigReader::get_string(const std::string& key, const std::string& def) const {
  if (!has(key)) return def;
  const auto& v = j_.at(key);
  if (v.is_string()) return v.get<std::string>();
  throw ModelError(where(key) + ": expected a string, got " + json_excerpt(v));
}

ConfigReader ConfigReader::child(const std::string& key) const {
  std::string p = path_.empty() ? key : path_ + "." + key;
  if (!has(key)) return ConfigReader(empty_object(), source_, p);
  const auto& v = j_.at(key);
  if (!v.is_object()) throw ModelError(where(key) + ": expected an object, got " + json_excerpt(v));
  return ConfigReader(v, source_, p);
}

}  // namespace lli::models
