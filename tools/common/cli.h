// Flags and plumbing shared by the four lli tools: common options, the error -> exit-code
// mapping, input selection (single image, session, batch), session bookkeeping and result output.
// No tensor math here: tools parse flags, read and write files, and call the library.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "lli/prompt.h"
#include "lli/registry.h"
#include "lli/session.h"

namespace lli::cli {

struct CommonOptions {
  std::string model;        // -m: registry name or checkpoint directory
  std::string image;        // -i: file, "-", directory or @list.txt (batch)
  std::string output;       // -o
  std::string session;      // --session FILE or "-"
  std::string session_dir;  // --session-dir
  std::optional<int> from_step;
  std::string device = "cpu";
  std::string dtype = "auto";
  int threads = 0;  // 0 = number of cores
  std::optional<std::int64_t> seed;
  std::string config;
  bool json = false;
  bool quiet = false;
  bool verbose = false;
  bool progress = false;
  bool allow_truncated = false;  // --allow-truncated: decode truncated/corrupt images with a warning
  // batch
  std::string outdir;
  bool overwrite = false;
  std::string shard;  // "K/N"

  // Raw storage for the optional flags (CLI11 2.1 has no std::optional options); run_tool fills
  // from_step / seed from them when the flag was given.
  int from_step_raw = -1;
  std::int64_t seed_raw = 0;
  CLI::Option* from_step_opt = nullptr;
  CLI::Option* seed_opt = nullptr;
};

// Which groups of flags a tool takes.
struct FlagSet {
  bool model = true;
  bool image = true;
  bool output = true;
  bool session = true;
  bool batch = true;
  bool seed = true;
  bool device = true;
};

// Adds the common flags to `app` (and to subcommands when they are given as `app`).
void add_common_flags(CLI::App& app, CommonOptions& o, const FlagSet& which = {});

// Prompt flags shared by segment / generate / edit.
struct PromptOptions {
  std::string prompt_file;  // --prompt FILE (or a directory in batch mode: <stem>.json)
  std::vector<std::string> points, boxes, strokes;
  std::string text;
  double stroke_width = PromptLimits::default_stroke_width;
  bool normalized = false;
};
void add_prompt_flags(CLI::App& app, PromptOptions& p, bool with_text);

// Loads the prompt for an image of width x height: the file (if any) plus inline flags,
// validated and converted to pixels. `file_override` replaces p.prompt_file (batch pairing).
Prompt build_prompt(const PromptOptions& p, int width, int height, const std::string& file_override = "");
bool has_prompt(const PromptOptions& p);

// Runs a tool body: installs signal handlers, parses argv with `app`, applies --quiet/--progress
// /--threads, calls body(), and maps every error to its documented exit code with a one-line
// message "<tool>: error: <message>" on stderr. Returns the exit code.
int run_tool(const std::string& tool, CLI::App& app, int argc, char** argv, CommonOptions& o,
             const std::function<void()>& body);

// Prints "<tool>: error: <message>" on stderr as ONE line (control characters in the message,
// e.g. a '\n' in a file name or a JSON key, escaped).
void print_error(const std::string& tool, const std::string& msg);

// Setup after parsing: log level, progress mode, thread count (libtorch) when needed.
void apply_runtime_options(const CommonOptions& o, bool uses_torch);

// The registry (config lookup per --config / $LLI_CONFIG / ...), loaded once.
const Registry& registry(const CommonOptions& o);

// ---- sessions --------------------------------------------------------------------------------
// A tool invocation's view of its session: loads it (stdin for "-"), gives the input image,
// records results, and saves it (stdout for "-") at the end.
class SessionContext {
 public:
  SessionContext(const CommonOptions& o, const std::string& tool);
  bool active() const { return session_.has_value(); }
  Session& get() { return *session_; }
  // The input image for this call: -i when given (imported as a new root step when a session is
  // active), else the session's current / --from-step image. Sets input_step().
  std::string input_image();
  int input_step() const { return input_step_; }
  void save();  // writes the session (atomically / to stdout)

 private:
  const CommonOptions& o_;
  std::string tool_;
  std::optional<Session> session_;
  int input_step_ = -1;
};

// True when stdout carries the session (--session -): results then go to stderr.
bool stdout_is_session(const CommonOptions& o);

// Prints a result object: with --json one compact JSON line, else `human` (if non-empty).
// Goes to stdout, or to stderr when stdout carries the session.
void emit_result(const CommonOptions& o, const nlohmann::json& result, const std::string& human);

// The k-th output path of n: `path` itself when n == 1, else <stem>-<k><ext> (mask.png ->
// mask-0.png, mask-1.png, ...).
std::string numbered(const std::string& path, std::size_t k, std::size_t n);

// Errors for tools/operations whose model has not landed yet (exit 4).
[[noreturn]] void no_backend(const std::string& what, const std::string& hint);

// A checkpoint for `-m` (or the tool's default model from the registry) must exist: throws the
// registry's ModelError (with how to fetch it) when it does not. Returns the resolved model.
// When -m is not given and the configured default is a registry entry that is not installed, an
// installed demo model of the same kind (Registry::installed_demo) is used instead, said on stderr.
ResolvedModel require_model(const CommonOptions& o, const std::string& tool);

// reg.resolve_model(name), or (unless explicit_choice, i.e. the user named it) the installed demo
// model of the entry's kind when `name` is a registry entry that is not installed; the original
// ModelError when there is none.
ResolvedModel resolve_or_demo(const Registry& reg, const std::string& name, bool explicit_choice, const std::string& tool);

}  // namespace lli::cli
