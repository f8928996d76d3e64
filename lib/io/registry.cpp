// Model registry (configs/models.yaml): lookup, parsing, model resolution, per-tool defaults.
#include "lli/registry.h"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "core/quote.h"
#include "io/bounded_parse.h"
#include "lli/error.h"

#ifndef LLI_SOURCE_CONFIG_DIR
#define LLI_SOURCE_CONFIG_DIR ""
#endif
#ifndef LLI_INSTALL_CONFIG_DIR
#define LLI_INSTALL_CONFIG_DIR ""
#endif

namespace lli {

namespace {

constexpr std::uintmax_t kMaxConfigBytes = 4u << 20;

bool is_name_start(char ch) { return std::isalpha(static_cast<unsigned char>(ch)) || ch == '_'; }
bool is_name_char(char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; }

std::string env_or_empty(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v ? std::string(v) : std::string();
}

std::string expand_vars(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    if (s[i] != '$' || i + 1 >= s.size()) {
      out += s[i++];
      continue;
    }
    if (s[i + 1] == '{') {
      // Find the matching '}', allowing nested ${...} in a default.
      std::size_t depth = 1, j = i + 2;
      for (; j < s.size() && depth; ++j) {
        if (s[j] == '{') ++depth;
        else if (s[j] == '}') --depth;
      }
      if (depth) throw ModelError("path '" + s + "': unterminated '${'");
      std::string body = s.substr(i + 2, j - 1 - (i + 2));
      std::size_t sep = body.find(":-");
      std::string name = body.substr(0, sep);
      if (name.empty() || !is_name_start(name[0]))
        throw ModelError("path '" + s + "': bad variable name '" + name + "'");
      for (char ch : name)
        if (!is_name_char(ch)) throw ModelError("path '" + s + "': bad variable name '" + name + "'");
      std::string value = env_or_empty(name);
      if (value.empty() && sep != std::string::npos) value = expand_path(body.substr(sep + 2));
      out += value;
      i = j;
    } else if (is_name_start(s[i + 1])) {
      std::size_t j = i + 1;
      while (j < s.size() && is_name_char(s[j])) ++j;
      out += env_or_empty(s.substr(i + 1, j - i - 1));
      i = j;
    } else {
      out += s[i++];
    }
  }
  return out;
}

std::string yaml_pos(const fs::path& file, const YAML::Mark& m) {
  return file.string() + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

[[noreturn]] void fail_at(const fs::path& file, const YAML::Node& n, const std::string& msg) {
  throw ModelError(yaml_pos(file, n.Mark()) + ": " + msg);
}

std::string scalar(const fs::path& file, const YAML::Node& n, const std::string& key) {
  if (!n.IsScalar()) fail_at(file, n, key + ": expected a string");
  return n.Scalar();
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

std::string expand_path(const std::string& path) {
  std::string s = expand_vars(path);
  if (s == "~" || s.rfind("~/", 0) == 0) {
    const char* home = std::getenv("HOME");
    if (!home || !*home) throw ModelError("path '" + path + "': cannot expand '~' ($HOME is not set)");
    s = std::string(home) + s.substr(1);
  }
  return s;
}

// ---- loading ---------------------------------------------------------------------------------

std::vector<fs::path> Registry::search_paths(const std::string& config_flag) {
  std::vector<fs::path> out;
  if (!config_flag.empty()) out.emplace_back(config_flag);
  std::string env = env_or_empty("LLI_CONFIG");
  if (!env.empty()) out.emplace_back(env);
  std::string home = env_or_empty("HOME");
  if (!home.empty()) out.push_back(fs::path(home) / ".config" / "lli" / "models.yaml");
  if (*LLI_INSTALL_CONFIG_DIR) out.push_back(fs::path(LLI_INSTALL_CONFIG_DIR) / "models.yaml");
  if (*LLI_SOURCE_CONFIG_DIR) out.push_back(fs::path(LLI_SOURCE_CONFIG_DIR) / "models.yaml");
  return out;
}

Registry Registry::load(const std::string& config_flag) {
  std::error_code ec;
  if (!config_flag.empty()) {
    if (!fs::is_regular_file(config_flag, ec))
      throw UsageError("--config " + config_flag + ": no such file");
    return load_file(config_flag);
  }
  std::string env = env_or_empty("LLI_CONFIG");
  if (!env.empty()) {
    if (!fs::is_regular_file(env, ec))
      throw ModelError("$LLI_CONFIG=" + env + ": no such file");
    return load_file(env);
  }
  for (const auto& p : search_paths(""))
    if (fs::is_regular_file(p, ec)) return load_file(p);
  return Registry();
}

Registry Registry::load_file(const fs::path& file) {
  std::error_code ec;
  auto size = fs::file_size(file, ec);
  if (ec) throw ModelError(file.string() + ": cannot read the model config (" + ec.message() + ")");
  if (size > kMaxConfigBytes)
    throw ModelError(file.string() + ": model config is " + std::to_string(size) +
                     " bytes, more than the limit of " + std::to_string(kMaxConfigBytes));
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ModelError(file.string() + ": cannot open the model config");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), file);
}

Registry Registry::parse(const std::string& yaml_text, const fs::path& file) {
  Registry r;
  r.file_ = file;
  YAML::Node root = load_yaml_bounded(yaml_text, file.string(), ExitCode::model);
  if (!root || root.IsNull()) return r;
  if (!root.IsMap()) fail_at(file, root, "expected a mapping with 'models' and 'tools'");
  for (auto it = root.begin(); it != root.end(); ++it) {
    std::string key = scalar(file, it->first, "top-level key");
    YAML::Node val = it->second;
    if (key == "models") {
      if (val.IsNull()) continue;
      if (!val.IsMap()) fail_at(file, val, "models: expected a mapping name -> entry");
      for (auto m = val.begin(); m != val.end(); ++m) {
        ModelEntry e;
        e.name = scalar(file, m->first, "models");
        std::string where = "models." + e.name;
        YAML::Node body = m->second;
        if (!body.IsMap()) fail_at(file, body, where + ": expected a mapping (kind, path, source, dtype)");
        for (auto f = body.begin(); f != body.end(); ++f) {
          std::string fk = scalar(file, f->first, where);
          if (fk == "defaults") {  // {key: scalar}: this model's settings for the tools
            YAML::Node d = f->second;
            if (d.IsNull()) continue;
            if (!d.IsMap()) fail_at(file, d, where + ".defaults: expected a mapping key -> value");
            auto& dst = r.model_defaults_[e.name];
            for (auto kv = d.begin(); kv != d.end(); ++kv) {
              std::string k = scalar(file, kv->first, where + ".defaults");
              YAML::Node v = kv->second;
              if (v.IsNull()) continue;
              if (!v.IsScalar()) fail_at(file, v, where + ".defaults." + k + ": expected a single value");
              dst[k] = ToolValue{v.Scalar(), v.Mark().line + 1, v.Mark().column + 1};
            }
            continue;
          }
          std::string fv = scalar(file, f->second, where + "." + fk);
          if (fk == "kind") e.kind = fv;
          else if (fk == "path") e.path = fv;
          else if (fk == "source") e.source = fv;
          else if (fk == "dtype") e.dtype = fv;
          else if (fk == "description") e.description = fv;
          else
            fail_at(file, f->first, where + ": unknown key '" + fk +
                                        "' (allowed: kind, path, source, dtype, description, defaults)");
        }
        if (e.kind.empty()) fail_at(file, body, where + ": missing 'kind'");
        if (e.path.empty()) fail_at(file, body, where + ": missing 'path'");
        if (!e.dtype.empty() && e.dtype != "float32" && e.dtype != "float16" && e.dtype != "bfloat16")
          fail_at(file, body[std::string("dtype")], where + ".dtype: '" + e.dtype +
                                                         "' is not float32, float16 or bfloat16");
        r.models_[e.name] = e;
      }
    } else if (key == "tools") {
      if (val.IsNull()) continue;
      if (!val.IsMap()) fail_at(file, val, "tools: expected a mapping tool -> {key: value}");
      for (auto t = val.begin(); t != val.end(); ++t) {
        std::string tool = scalar(file, t->first, "tools");
        YAML::Node body = t->second;
        if (body.IsNull()) continue;
        if (!body.IsMap()) fail_at(file, body, "tools." + tool + ": expected a mapping key -> value");
        auto& dst = r.tools_[tool];
        for (auto kv = body.begin(); kv != body.end(); ++kv) {
          std::string k = scalar(file, kv->first, "tools." + tool);
          YAML::Node v = kv->second;
          if (v.IsNull()) continue;
          if (!v.IsScalar()) fail_at(file, v, "tools." + tool + "." + k + ": expected a single value");
          dst[k] = ToolValue{v.Scalar(), v.Mark().line + 1, v.Mark().column + 1};
        }
      }
    } else {
      fail_at(file, it->first, "unknown top-level key " + quote_excerpt(key) + " (allowed: models, tools)");
    }
  }
  return r;
}

std::vector<std::string> Registry::model_names() const {
  std::vector<std::string> v;
  for (const auto& [k, _] : models_) v.push_back(k);
  return v;
}

// ---- model resolution ------------------------------------------------------------------------

std::optional<ResolvedModel> Registry::installed_demo(const std::string& kind) const {
  for (const auto& [name, e] : models_) {
    if (name.rfind("demo-", 0) != 0 || e.kind != kind) continue;
    try {
      return resolve_model(name);
    } catch (const ModelError&) {
      // not installed: try the next one
    }
  }
  return std::nullopt;
}

ResolvedModel Registry::resolve_model(const std::string& name_or_dir) const {
  if (name_or_dir.empty()) throw UsageError("--model: empty model name");
  std::error_code ec;
  for (const std::string& cand : {name_or_dir, expand_path(name_or_dir)}) {
    if (fs::is_directory(cand, ec)) {
      ResolvedModel m;
      m.name = name_or_dir;
      m.dir = fs::path(cand);
      return m;
    }
  }
  auto it = models_.find(name_or_dir);
  if (it == models_.end()) {
    bool looks_like_path = name_or_dir.find('/') != std::string::npos || name_or_dir[0] == '.' ||
                           name_or_dir[0] == '~';
    if (fs::exists(name_or_dir, ec))
      throw ModelError(name_or_dir + ": not a directory (pass the checkpoint directory)");
    if (looks_like_path)
      throw ModelError(name_or_dir + ": checkpoint directory does not exist");
    std::string src = file_.empty() ? std::string("no model config found") : file_.string();
    throw ModelError("unknown model " + quote_excerpt(name_or_dir) + " (known in " + src + ": " +
                     (models_.empty() ? std::string("none") : join(model_names())) +
                     "; or pass a checkpoint directory)");
  }
  const ModelEntry& e = it->second;
  // Expanded now (not at parse time): the environment decides. Relative = relative to the config.
  fs::path dir = expand_path(e.path);
  if (dir.is_relative() && !file_.empty()) dir = (fs::absolute(file_).parent_path() / dir).lexically_normal();
  if (!fs::is_directory(dir, ec)) {
    std::string msg = "model '" + e.name + "' (" + e.kind + ") is not installed: expected its checkpoint directory at " +
                      dir.string() + " (from " + file_.string() + ")";
    if (e.kind == "lama")  // released as a PyTorch-Lightning training checkpoint: converted once
      msg += "; get big-lama.zip from https://huggingface.co/" + e.source + " on a machine with network access, unzip "
             "it and run `python3 scripts/convert-lama.py big-lama/ " + dir.string() + "`";
    else if (e.source.find("://") != std::string::npos)
      msg += "; download it from " + e.source + " into that directory";
    else if (!e.source.empty())
      msg += "; get it with `huggingface-cli download " + e.source + " --local-dir " + dir.string() +
             "` on a machine with network access";
    msg += " (or set LLI_MODELS, or pass a checkpoint directory)";
    throw ModelError(msg);
  }
  ResolvedModel m;
  m.name = e.name;
  m.kind = e.kind;
  m.dir = dir;
  m.dtype = e.dtype;
  m.source = e.source;
  m.from_registry = true;
  return m;
}

// ---- per-tool defaults -----------------------------------------------------------------------

const Registry::ToolValue* Registry::find_tool_value(const std::string& tool, const std::string& key) const {
  auto t = tools_.find(tool);
  if (t == tools_.end()) return nullptr;
  auto k = t->second.find(key);
  return k == t->second.end() ? nullptr : &k->second;
}

const Registry::ToolValue* Registry::find_model_value(const std::string& model, const std::string& key) const {
  auto m = model_defaults_.find(model);
  if (m == model_defaults_.end()) return nullptr;
  auto k = m->second.find(key);
  return k == m->second.end() ? nullptr : &k->second;
}

std::string Registry::where(const ToolValue& v, const std::string& section, const std::string& key) const {
  return file_.string() + ":" + std::to_string(v.line) + ":" + std::to_string(v.column) + ": " + section + "." + key;
}

double Registry::to_double(const ToolValue& v, const std::string& section, const std::string& key) const {
  errno = 0;
  char* end = nullptr;
  double d = std::strtod(v.text.c_str(), &end);
  if (v.text.empty() || end != v.text.c_str() + v.text.size() || errno == ERANGE || !std::isfinite(d))
    throw ModelError(where(v, section, key) + ": '" + v.text + "' is not a number");
  return d;
}

int Registry::to_int(const ToolValue& v, const std::string& section, const std::string& key) const {
  errno = 0;
  char* end = nullptr;
  long long n = std::strtoll(v.text.c_str(), &end, 10);
  if (v.text.empty() || end != v.text.c_str() + v.text.size() || errno == ERANGE)
    throw ModelError(where(v, section, key) + ": '" + v.text + "' is not an integer");
  if (n < INT_MIN || n > INT_MAX) throw ModelError(where(v, section, key) + ": " + v.text + " is out of range");
  return static_cast<int>(n);
}

std::optional<std::string> Registry::tool_default(const std::string& tool, const std::string& key) const {
  const ToolValue* v = find_tool_value(tool, key);
  if (!v) return std::nullopt;
  return v->text;
}

std::string Registry::tool_string(const std::string& tool, const std::string& key,
                                  const std::string& fallback) const {
  const ToolValue* v = find_tool_value(tool, key);
  return v ? v->text : fallback;
}

double Registry::tool_double(const std::string& tool, const std::string& key, double fallback) const {
  const ToolValue* v = find_tool_value(tool, key);
  return v ? to_double(*v, "tools." + tool, key) : fallback;
}

int Registry::tool_int(const std::string& tool, const std::string& key, int fallback) const {
  const ToolValue* v = find_tool_value(tool, key);
  return v ? to_int(*v, "tools." + tool, key) : fallback;
}

bool Registry::tool_bool(const std::string& tool, const std::string& key, bool fallback) const {
  const ToolValue* v = find_tool_value(tool, key);
  if (!v) return fallback;
  const std::string& s = v->text;
  if (s == "true" || s == "True" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "False" || s == "no" || s == "off") return false;
  throw ModelError(where(*v, "tools." + tool, key) + ": '" + s + "' is not a boolean (true or false)");
}

std::optional<std::string> Registry::model_default(const std::string& model, const std::string& key) const {
  const ToolValue* v = find_model_value(model, key);
  if (!v) return std::nullopt;
  return v->text;
}

double Registry::model_double(const std::string& model, const std::string& key, double fallback) const {
  const ToolValue* v = find_model_value(model, key);
  return v ? to_double(*v, "models." + model + ".defaults", key) : fallback;
}

int Registry::model_int(const std::string& model, const std::string& key, int fallback) const {
  const ToolValue* v = find_model_value(model, key);
  return v ? to_int(*v, "models." + model + ".defaults", key) : fallback;
}

}  // namespace lli
