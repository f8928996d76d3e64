// Model registry: configs/models.yaml names the checkpoints (kind, directory, where to get them,
// default dtype) and the per-tool defaults. Torch-free (lli_base).
//
// File format:
//   models:
//     llava-1.5-7b:
//       kind: llava                       # llava | sam | gligen | lama | ... (free string)
//       path: ${LLI_MODELS:-~/.cache/lli/models}/llava-1.5-7b
//       source: llava-hf/llava-1.5-7b-hf  # Hugging Face repo id or URL (informational)
//       dtype: float16                    # default dtype (optional)
//       description: "..."                # optional
//       defaults: {beta: 1.0}             # optional: this model's settings for the tools (below)
//   tools:
//     lli-chat: {model: llava-1.5-7b, temperature: 0.2, top_p: 0.7, max_new_tokens: 512}
// Unknown keys in a model entry are errors (typos); tool defaults are free key/value scalars.
//
// Path expansion (expand_path): ${VAR}, ${VAR:-default} (default used when VAR is unset or empty;
// the default is itself expanded) and $VAR are substituted, then a leading "~" or "~/" becomes
// $HOME. A relative result is taken relative to the config file's directory.
//
// Config lookup order (the first that applies is used; there is no merging):
//   1. --config FILE (must exist: UsageError otherwise)
//   2. $LLI_CONFIG (must exist: ModelError otherwise)
//   3. ~/.config/lli/models.yaml (if it exists)
//   4. the installed configs dir (LLI_INSTALL_CONFIG_DIR)/models.yaml (if it exists)
//   5. the source tree's configs/models.yaml (LLI_SOURCE_CONFIG_DIR) (if it exists)
//   none: an empty registry (model names unknown; checkpoint directories still work).
//
// Precedence of settings: built-in default < YAML (tools.<tool>.<key>) < the model's entry
// (models.<name>.defaults.<key>, when the model was chosen by its registry name) < command line.
// Tools call e.g. `opt_given ? flag_value : reg.tool_double("lli-chat", "temperature", 0.2)`, and
// `reg.model_double(model, "beta", value_so_far)` once the model is resolved.
//
// Errors: malformed YAML -> ModelError "models.yaml:12:5: ..." (yaml-cpp mark, 1-based); wrong
// value types name the file, line:column and the key; unknown model name -> ModelError listing the
// known names; a registry entry whose directory is missing -> ModelError saying where it was
// expected and how to fetch it.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace lli {

namespace fs = std::filesystem;

struct ModelEntry {
  std::string name;
  std::string kind;         // "llava", "sam", "gligen", "lama", ...
  std::string path;         // as written in the YAML (unexpanded)
  std::string source;       // HF repo id or URL; may be empty
  std::string dtype;        // "float16", "float32", "bfloat16", or empty
  std::string description;  // may be empty
};

struct ResolvedModel {
  std::string name;  // registry name, or the directory as given
  std::string kind;  // empty when resolved from a bare directory
  fs::path dir;      // the checkpoint directory (exists)
  std::string dtype;
  std::string source;
  bool from_registry = false;
};

// Expands ${VAR}, ${VAR:-default}, $VAR and a leading ~ (see above). A variable that is unset
// without a default expands to "". Throws ModelError on an unterminated "${".
std::string expand_path(const std::string& path);

class Registry {
 public:
  // Candidate config files in lookup order (only those that apply: the flag if non-empty, the
  // env var if set, then the three fixed places whether they exist or not).
  static std::vector<fs::path> search_paths(const std::string& config_flag = "");

  // Finds and loads the config (see the lookup order). Throws UsageError / ModelError.
  static Registry load(const std::string& config_flag = "");
  // Loads one YAML file. Throws ModelError naming the file.
  static Registry load_file(const fs::path& file);
  // Parses YAML text; `file` is used in messages and to resolve relative paths. Throws ModelError.
  static Registry parse(const std::string& yaml_text, const fs::path& file);

  Registry() = default;  // empty registry

  const fs::path& config_file() const { return file_; }  // empty for an empty registry
  const std::map<std::string, ModelEntry>& models() const { return models_; }
  std::vector<std::string> model_names() const;  // sorted
  bool has_model(const std::string& name) const { return models_.count(name) != 0; }

  // An existing directory -> that checkpoint directory; else a registry name -> its entry with the
  // path expanded (ModelError if that directory does not exist, with the fetch hint); else
  // ModelError listing the known names.
  ResolvedModel resolve_model(const std::string& name_or_dir) const;

  // The first installed demo model (an entry named demo-*, trained by lli on its shapes world:
  // models/, issue 13) of `kind` ("sam", "lama", ...), in name order; nullopt when there is none.
  std::optional<ResolvedModel> installed_demo(const std::string& kind) const;

  // Per-tool defaults from tools.<tool>.<key> (YAML scalars). tool_default gives the scalar text.
  // Typed getters return `fallback` (the built-in default) when the key is absent and throw
  // ModelError naming the file, line:column and key when the value has the wrong type.
  // model_* read models.<model>.defaults.<key> the same way (fallback when the model or key is absent).
  std::optional<std::string> tool_default(const std::string& tool, const std::string& key) const;
  std::string tool_string(const std::string& tool, const std::string& key,
                          const std::string& fallback) const;
  double tool_double(const std::string& tool, const std::string& key, double fallback) const;
  int tool_int(const std::string& tool, const std::string& key, int fallback) const;
  bool tool_bool(const std::string& tool, const std::string& key, bool fallback) const;
  std::optional<std::string> model_default(const std::string& model, const std::string& key) const;
  double model_double(const std::string& model, const std::string& key, double fallback) const;
  int model_int(const std::string& model, const std::string& key, int fallback) const;

 private:
  struct ToolValue {
    std::string text;
    int line = 0, column = 0;  // 1-based position in the YAML for messages
  };
  const ToolValue* find_tool_value(const std::string& tool, const std::string& key) const;
  const ToolValue* find_model_value(const std::string& model, const std::string& key) const;
  // "FILE:LINE:COL: SECTION.KEY" for messages; SECTION is "tools.<tool>" or "models.<name>.defaults"
  std::string where(const ToolValue& v, const std::string& section, const std::string& key) const;
  double to_double(const ToolValue& v, const std::string& section, const std::string& key) const;
  int to_int(const ToolValue& v, const std::string& section, const std::string& key) const;

  fs::path file_;
  std::map<std::string, ModelEntry> models_;
  std::map<std::string, std::map<std::string, ToolValue>> tools_;
  std::map<std::string, std::map<std::string, ToolValue>> model_defaults_;  // model -> key -> value
};

}  // namespace lli
