#include "cli.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <new>
#include <opencv2/core.hpp>

#include "core/activity.h"
#include "core/quote.h"
#include "lli/device.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/image.h"
#include "lli/log.h"

namespace lli::cli {

void add_common_flags(CLI::App& app, CommonOptions& o, const FlagSet& which) {
  if (which.model)
    app.add_option("-m,--model", o.model, "Model: a name from configs/models.yaml or a checkpoint directory");
  if (which.image)
    app.add_option("-i,--image", o.image,
                   which.batch ? "Input image ('-' = stdin), or a directory / @list.txt for batch mode"
                               : "Input image ('-' = stdin)");
  if (which.output) app.add_option("-o,--output", o.output, "Output file ('-' = PNG on stdout)");
  if (which.session) {
    app.add_option("--session", o.session,
                   "Session file carrying the image history between tools ('-' = read it on stdin, "
                   "write the updated session on stdout)");
    app.add_option("--session-dir", o.session_dir,
                   "Directory for the session's images (default: beside the session file; "
                   "./lli-session/ for a piped session)");
    o.from_step_opt = app.add_option("--from-step", o.from_step_raw, "Start from this earlier session step (undo / branch)")
        ->check(CLI::NonNegativeNumber);
  }
  if (which.batch) {
    app.add_option("--outdir", o.outdir, "Batch mode: output directory (created if missing)");
    app.add_flag("--overwrite", o.overwrite, "Batch mode: redo items whose output already exists");
    app.add_option("--shard", o.shard, "Batch mode: process part K of N (K/N, 1-based), e.g. --shard 2/4");
  }
  if (which.device) {
    app.add_option("--device", o.device, "cpu | cuda | cuda:N")->capture_default_str();
    app.add_option("--dtype", o.dtype, "auto | f32 | bf16 | f16 (auto: bf16 on CPUs with AVX512-BF16, f16 on CUDA)")
        ->capture_default_str();
    app.add_option("--threads", o.threads, "CPU threads (default: number of cores)");
  }
  if (which.seed) o.seed_opt = app.add_option("--seed", o.seed_raw, "Random seed");
  app.add_option("--config", o.config, "models.yaml to use (default: $LLI_CONFIG, ~/.config/lli/models.yaml, installed configs/)");
  app.add_flag("--json", o.json, "Print the result as one JSON object (JSON Lines in batch mode)");
  app.add_flag("-q,--quiet", o.quiet, "No logs or progress on stderr (errors are still printed)");
  app.add_flag("-v,--verbose", o.verbose, "Debug logs on stderr");
  app.add_flag("--progress", o.progress, "Draw progress bars even when stderr is not a terminal");
  app.add_flag("--allow-truncated", o.allow_truncated,
               "Decode truncated or corrupt images (a cut JPEG: the rest is grey) with a warning instead of exit 3");
}

void add_prompt_flags(CLI::App& app, PromptOptions& p, bool with_text) {
  app.add_option("-p,--prompt", p.prompt_file, "Prompt JSON file (strokes, points, boxes, text; see README)");
  app.add_option("--point", p.points, "Point x,y[,neg] (repeatable)");
  app.add_option("--box", p.boxes, "Box x0,y0,x1,y1[,phrase] (repeatable)");
  app.add_option("--stroke", p.strokes, "Stroke \"x,y x,y ...\" (prefix neg: for a negative stroke; repeatable)");
  app.add_option("--stroke-width", p.stroke_width, "Width in pixels of --stroke strokes")->capture_default_str();
  app.add_flag("--normalized", p.normalized, "Inline coordinates are 0..1 of the image size");
  if (with_text) app.add_option("--text", p.text, "Text prompt");
}

bool has_prompt(const PromptOptions& p) {
  return !p.prompt_file.empty() || !p.points.empty() || !p.boxes.empty() || !p.strokes.empty() || !p.text.empty();
}

Prompt build_prompt(const PromptOptions& p, int width, int height, const std::string& file_override) {
  const std::string file = file_override.empty() ? p.prompt_file : file_override;
  Prompt out;
  bool have = false;
  if (!file.empty()) {
    out = to_pixels(load_prompt(file), width, height);
    have = true;
  }
  if (!p.points.empty() || !p.boxes.empty() || !p.strokes.empty() || !p.text.empty()) {
    Prompt inl = parse_inline_prompt(p.points, p.boxes, p.strokes, p.text, p.stroke_width,
                                     p.normalized ? Coords::normalized : Coords::pixels);
    inl = to_pixels(inl, width, height);
    if (have)
      merge_prompt(out, inl);
    else
      out = inl;
  }
  return out;
}

void apply_runtime_options(const CommonOptions& o, bool uses_torch) {
  set_log_level(o.quiet ? LogLevel::quiet : (o.verbose ? LogLevel::debug : LogLevel::info));
  set_progress_mode(o.progress);
  set_allow_truncated_images(o.allow_truncated);
  // --device / --dtype are validated by every tool (usage errors); a model tool also checks that
  // the device exists (exit 4 with a CPU-only libtorch) and sets the thread count.
  const DeviceChoice dev = parse_device(o.device);
  const DTypeChoice dt = parse_dtype(o.dtype);
  if (uses_torch) {
    check_device_available(dev);
    (void)resolve_dtype(dt, dev);
    configure_threads(o.threads);
  }
}

const Registry& registry(const CommonOptions& o) {
  static std::optional<Registry> reg;
  if (!reg) reg = Registry::load(o.config);
  return *reg;
}

void print_error(const std::string& tool, const std::string& msg) {
  std::fprintf(stderr, "%s: error: %s\n", tool.c_str(), one_line(msg).c_str());
  std::fflush(stderr);
}

int run_tool(const std::string& tool, CLI::App& app, int argc, char** argv, CommonOptions& o,
             const std::function<void()>& body) {
  install_signal_handlers();
  cv::redirectError([](int, const char*, const char*, const char*, int, void*) { return 0; });
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: error: %s\nRun '%s --help' for usage and examples.\n", tool.c_str(),
                 one_line(e.what()).c_str(), tool.c_str());
    return static_cast<int>(ExitCode::usage);
  }
  if (o.from_step_opt && o.from_step_opt->count()) o.from_step = o.from_step_raw;
  if (o.seed_opt && o.seed_opt->count()) o.seed = o.seed_raw;
  auto fail = [&](int code, const std::string& msg) {
    print_error(tool, msg);
    return code;
  };
  const std::string fallback = "running " + tool;
  try {
    Activity running(fallback);
    body();
    return 0;
  } catch (const InterruptedError&) {
    return fail(130, "interrupted; no partial output was written");
  } catch (const Error& e) {
    // A library error that wraps an allocation failure (LaMa's generator, OpenCV's codecs, ...)
    if (e.code() == ExitCode::runtime && is_allocation_failure(e.what()))
      return fail(5, out_of_memory_message(fallback, e.what()));
    return fail(static_cast<int>(e.code()), e.what());
  } catch (const CLI::ParseError& e) {
    return fail(2, e.what());
  } catch (const std::bad_alloc& e) {
    return fail(5, out_of_memory_message(fallback, e.what()));
  } catch (const cv::Exception& e) {
    const std::string msg = std::string("OpenCV: ") + e.what();
    if (e.code == cv::Error::StsNoMem || is_allocation_failure(msg)) return fail(5, out_of_memory_message(fallback, msg));
    return fail(5, msg);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    // libtorch's c10::Error carries a multi-line backtrace; keep the first line.
    msg = msg.substr(0, msg.find('\n'));
    if (is_allocation_failure(msg)) return fail(5, out_of_memory_message(fallback, msg));
    return fail(5, msg);
  }
}

// ---- sessions --------------------------------------------------------------------------------
SessionContext::SessionContext(const CommonOptions& o, const std::string& tool) : o_(o), tool_(tool) {
  if (o.session.empty()) {
    if (!o.session_dir.empty()) throw UsageError("--session-dir needs --session");
    if (o.from_step) throw UsageError("--from-step needs --session");
    return;
  }
  if (o.session == "-" && o.image == "-") throw UsageError("--session - and -i - both want stdin; give the image as a file");
  session_ = Session::load(o.session, o.session_dir);
}

std::string SessionContext::input_image() {
  if (!session_) {
    if (o_.image.empty()) throw UsageError("no input image: pass -i IMAGE (or --session FILE)");
    return o_.image;
  }
  if (!o_.image.empty()) {
    if (o_.from_step) throw UsageError("-i and --from-step are exclusive: -i starts a new root step");
    if (o_.image == "-") {
      std::string bytes = read_file("-");
      input_step_ = session_->add_image_step(bytes, "png", "import", "import",
                                             nlohmann::json{{"source", "<stdin>"}}, std::nullopt, std::nullopt);
    } else {
      input_step_ = session_->import_image(o_.image);
    }
  } else {
    input_step_ = session_->input_step(o_.from_step);
  }
  return session_->image_path(input_step_).string();
}

void SessionContext::save() {
  if (session_) session_->save(o_.session);
}

bool stdout_is_session(const CommonOptions& o) { return o.session == "-"; }

void emit_result(const CommonOptions& o, const nlohmann::json& result, const std::string& human) {
  std::FILE* out = stdout_is_session(o) ? stderr : stdout;
  if (o.json) {
    std::string line = result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::fprintf(out, "%s\n", line.c_str());
  } else if (!human.empty() && !(out == stderr && o.quiet)) {
    std::fprintf(out, "%s\n", human.c_str());
  }
  std::fflush(out);
}

std::string numbered(const std::string& path, std::size_t k, std::size_t n) {
  if (n == 1) return path;
  std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + "-" + std::to_string(k) + p.extension().string())).string();
}

void no_backend(const std::string& what, const std::string& hint) {
  throw ModelError(what + ": no backend available yet" + (hint.empty() ? "" : " (" + hint + ")"));
}

ResolvedModel require_model(const CommonOptions& o, const std::string& tool) {
  const Registry& reg = registry(o);
  std::string name = o.model;
  if (name.empty()) name = reg.tool_string(tool, "model", "");
  if (name.empty())
    throw ModelError("no model configured for " + tool + ": pass -m CHECKPOINT_DIR or set tools." + tool +
                     ".model in models.yaml (see README, 'Models')");
  return resolve_or_demo(reg, name, !o.model.empty(), tool);
}

ResolvedModel resolve_or_demo(const Registry& reg, const std::string& name, bool explicit_choice, const std::string& tool) {
  try {
    return reg.resolve_model(name);
  } catch (const ModelError&) {
    const auto it = reg.models().find(name);
    if (explicit_choice || it == reg.models().end()) throw;
    const auto demo = reg.installed_demo(it->second.kind);
    if (!demo) throw;
    log_info("{}: '{}' is not installed; using the demo model '{}' (it knows only lli's synthetic shapes world: {})", tool,
             name, demo->name, (demo->dir / "MODEL_CARD.md").string());
    return *demo;
  }
}

}  // namespace lli::cli
