// lli-generate: text + layout boxes with phrases -> image (GLIGEN on Stable Diffusion 1.x; a plain
// SD-1.x checkpoint for text only). Flags, files, sessions and batch; the pipeline is
// lib/pipelines/generate.h.
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <fstream>
#include <random>
#include <set>

#include "common/batch.h"
#include "common/cli.h"
#include "core/activity.h"
#include "core/quote.h"
#include "core/version.h"
#include "io/bounded_parse.h"
#include "io/png_text.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/image.h"
#include "lli/log.h"
#include "pipelines/generate.h"

using namespace lli;
using namespace lli::cli;
using lli::pipelines::GenerateRequest;
using lli::pipelines::GLIGENGenerator;
using nlohmann::json;

namespace {

const char* kExamples = R"(
Examples:
  lli-generate -m gligen-generation "a living room with a sofa and a cat" --layout layout.json -o out.png
  lli-generate -m DIR --text "a cat next to a lamp" --box 0.1,0.4,0.5,0.9,"a cat" --box 0.6,0.2,0.9,0.9,"a lamp" \
      --normalized --negative-prompt "blurry" --seed 7 --steps 30 -o out.png --json
  lli-generate -m DIR "a red car" --num-images 4 -o car.png        # car-0.png ... car-3.png, one noise draw
  lli-generate --from-png out.png -o again.png                     # the same image from its own metadata
  lli-generate -m DIR --batch prompts.jsonl --outdir imgs/ --shard 1/2   # resumable; one JSON object per line
  lli-generate -m DIR "a beach" --session s.json                   # the image becomes the session's new root step
  lli-segment --session s.json --box 10,10,200,200,"a dog" && lli-generate -m DIR "a park" --session s.json --layout-from-session
  lli-generate -m demo-gligen "a red cross left of a blue circle" --box 6,20,30,44,"red cross" -o scene.png   # lli's shapes-world demo
Without -m, lli-generate uses models.yaml's model, or lli's shapes-world demo-gligen when that is not installed
(64 x 64 px; it knows only lli-train-demo's synthetic scenes: models/demo-gligen/MODEL_CARD.md).
Layout file (the prompt schema shared by all tools):
  {"text": "a living room", "boxes": [{"box": [x0, y0, x1, y1], "phrase": "a sofa"}], "coords": "pixels"}
  pixels are of the output canvas (--width x --height); "coords": "normalized" for 0..1.
Batch file (JSON Lines): {"text": "...", "boxes": [...], "coords": "normalized", "seed": 7, "name": "cat",
  "negative_prompt": "...", "steps": 30, "guidance": 7.5, "beta": 0.3, "width": 512, "height": 512}
  each line -> OUTDIR/<name or line number>.png; existing outputs are skipped (resume) unless --overwrite.
Schedulers: auto (the checkpoint's scheduler_config.json class), pndm, ddim (--eta), euler, euler-a, dpm++2m (--karras).
Seeds: the initial noise is torch.Generator().manual_seed(SEED)'s randn, as diffusers on CPU; without --seed a
random seed is chosen and printed. PNG outputs carry every parameter in text chunks (--from-png reads them).
Exit codes: 0 ok, 2 usage, 3 bad input, 4 model/backend, 5 runtime, 130 interrupted.)";

struct GenerateFlags {
  std::string positional_text;
  std::string layout;
  std::string negative_prompt;
  int width = 0, height = 0, steps = 0, num_images = 1;
  double guidance = -1, beta = -1, eta = 0;
  std::string scheduler;
  bool karras = false, no_karras = false;
  bool vae_tiling = false, no_vae_tiling = false;
  std::string from_png;
  std::string batch;
  int preview_every = 0;
  bool layout_from_session = false;
  std::vector<std::string> phrases;
};

// Everything needed to regenerate one output; stored in the PNG ("lli-generate" chunk) and the session.
json request_json(const GenerateRequest& r, const std::string& model, const std::string& dtype, std::size_t index) {
  json boxes = json::array();
  for (const auto& b : r.boxes) boxes.push_back({{"box", {b.x0, b.y0, b.x1, b.y1}}, {"phrase", b.phrase}});
  json j = {{"prompt", r.prompt},
            {"negative_prompt", r.negative_prompt},
            {"boxes", boxes},
            {"coords", "normalized"},
            {"width", r.width},
            {"height", r.height},
            {"seed", r.seed},
            {"steps", r.steps},
            {"scheduler", r.scheduler},
            {"guidance", r.guidance},
            {"beta", r.beta},
            {"eta", r.eta},
            {"num_images", r.num_images},
            {"image_index", index},
            {"model", model},
            {"dtype", dtype},
            {"lli_version", lli::version()}};
  j["karras"] = r.karras ? json(*r.karras) : json(nullptr);
  return j;
}

// The PNG's text chunks: readable keys plus the whole record for --from-png.
PngText png_text_for(const json& rec) {
  json layout = {{"text", rec["prompt"]}, {"boxes", rec["boxes"]}, {"coords", "normalized"}};
  return {{"prompt", rec["prompt"].get<std::string>()},
          {"negative_prompt", rec["negative_prompt"].get<std::string>()},
          {"layout", layout.dump()},
          {"seed", std::to_string(rec["seed"].get<std::uint64_t>())},
          {"steps", std::to_string(rec["steps"].get<std::int64_t>())},
          {"scheduler", rec["scheduler"].get<std::string>()},
          {"guidance", rec["guidance"].dump()},
          {"beta", rec["beta"].dump()},
          {"model", rec["model"].get<std::string>()},
          {"Software", std::string("lli-generate ") + lli::version()},
          {"lli-generate", rec.dump()}};
}

std::string encode_output(const cv::Mat& bgr, const std::string& ext, const json& rec) {
  std::string bytes = encode_image(bgr, ext);
  if (ext == ".png") bytes = add_png_text(bytes, png_text_for(rec));
  return bytes;
}

// Reads the "lli-generate" record of a PNG written by this tool.
json read_png_record(const std::string& path) {
  const std::string bytes = read_file(path, kMaxImageFileBytes);
  for (const auto& [key, value] : read_png_text(bytes, path)) {
    if (key != "lli-generate") continue;
    json j = parse_json_bounded(value, path + ": lli-generate record", ExitCode::bad_input, "not valid JSON: ");
    if (!j.is_object()) throw InputError(path + ": the lli-generate record is not a JSON object");
    return j;
  }
  throw InputError(path + ": no lli-generate parameters in this PNG (was it written by lli-generate?)");
}

template <class T>
T record_value(const json& rec, const char* key, const T& def, const std::string& file) {
  if (!rec.contains(key) || rec[key].is_null()) return def;
  try {
    return rec[key].get<T>();
  } catch (const json::exception&) {
    throw InputError(file + ": lli-generate record: '" + std::string(key) + "' has the wrong type");
  }
}

// Layout boxes (pixels of the W x H canvas, already validated by to_pixels) -> normalised boxes.
std::vector<pipelines::GroundingBox> normalized_boxes(const Prompt& p, std::int64_t W, std::int64_t H) {
  if (!p.points.empty() || !p.strokes.empty())
    throw InputError(p.source + ": lli-generate takes boxes with phrases; points and strokes have no meaning here");
  std::vector<pipelines::GroundingBox> out;
  for (const auto& b : p.boxes) {
    pipelines::GroundingBox g;
    g.x0 = b.x0 / static_cast<double>(W);
    g.y0 = b.y0 / static_cast<double>(H);
    g.x1 = b.x1 / static_cast<double>(W);
    g.y1 = b.y1 / static_cast<double>(H);
    g.phrase = b.phrase;
    if (g.phrase.empty())
      throw InputError((b.origin.empty() ? p.source : b.origin) + ": a layout box needs a phrase (GLIGEN grounds the phrase in the box)");
    out.push_back(g);
  }
  return out;
}

// Layout boxes from the session's latest masks: each mask's bounding box, normalised to the mask's
// size, with the mask's label as phrase (or the --phrase values, in order).
std::vector<pipelines::GroundingBox> boxes_from_session(Session& s, const std::vector<std::string>& phrases) {
  const auto& masks = s.latest_masks();
  if (masks.empty()) throw InputError(s.name() + ": the session has no masks (run lli-segment on it first)");
  if (!phrases.empty() && phrases.size() != masks.size())
    throw UsageError("--phrase given " + std::to_string(phrases.size()) + " times but the session has " +
                     std::to_string(masks.size()) + " masks");
  std::vector<pipelines::GroundingBox> out;
  for (std::size_t k = 0; k < masks.size(); ++k) {
    const auto path = s.mask_path(masks[k]);
    cv::Mat m = read_mask(path.string());
    const cv::Rect r = cv::boundingRect(m);
    if (r.area() == 0) {
      log_info("lli-generate: mask {} is empty; skipped", path.filename().string());
      continue;
    }
    pipelines::GroundingBox g;
    g.x0 = r.x / static_cast<double>(m.cols);
    g.y0 = r.y / static_cast<double>(m.rows);
    g.x1 = (r.x + r.width) / static_cast<double>(m.cols);
    g.y1 = (r.y + r.height) / static_cast<double>(m.rows);
    g.phrase = phrases.empty() ? masks[k].label : phrases[k];
    if (g.phrase.empty())
      throw UsageError("mask " + std::to_string(k) + " of " + s.name() +
                       " has no phrase: give one --phrase per mask (in order)");
    out.push_back(g);
  }
  return out;
}

std::uint64_t random_seed() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 16 ^ rd()) & 0xffffffffull;
}

// Loads the pipeline on first use (after the request has been checked against its configs).
class Runner {
 public:
  Runner(const CommonOptions& o, const GenerateFlags& g, ResolvedModel m)
      : o_(o), g_(g), model_(std::move(m)), info_(pipelines::probe_pipeline(model_.dir)) {
    dtype_ = dtype_choice_name(resolve_dtype(parse_dtype(o_.dtype), parse_device(o_.device)));
  }

  const pipelines::PipelineInfo& info() const { return info_; }
  const std::string& model_name() const { return model_.name; }
  const std::string& dtype() const { return dtype_; }
  double load_ms() const { return gen_ ? gen_->load_ms() : 0; }

  GLIGENGenerator& generator() {
    if (!gen_) {
      Activity loading("loading the model " + model_.name);
      pipelines::GenerateOptions opts;
      opts.device = parse_device(o_.device);
      opts.dtype = parse_dtype(o_.dtype);
      gen_ = std::make_unique<GLIGENGenerator>(model_.dir, opts);
      log_info("lli-generate: loaded {} in {:.0f} ms ({})", model_.name, gen_->load_ms(), gen_->describe());
    }
    return *gen_;
  }

  // Runs one request with a progress bar (and previews next to `preview_base` when asked).
  pipelines::GenerateResult run(GenerateRequest req, const std::string& preview_base) {
    std::unique_ptr<Progress> bar;
    const double t0 = now_ms();
    req.on_step = [&](int i, int n) {
      if (!bar) bar = std::make_unique<Progress>("denoising", n);
      bar->update(i + 1);
      if (i + 1 == n) {
        bar->finish();
        log_debug("lli-generate: {} UNet calls, {:.2f} s/it", n, (now_ms() - t0) / 1000.0 / n);
      }
    };
    GLIGENGenerator& gen = generator();
    Activity generating(fmt::format("generating a {}x{} image", req.width, req.height));
    if (g_.preview_every > 0 && !preview_base.empty()) {
      req.preview_every = g_.preview_every;
      req.on_preview = [&](int, const std::vector<cv::Mat>& imgs) {
        for (std::size_t k = 0; k < imgs.size(); ++k)
          write_image(numbered(preview_base, k, imgs.size()), imgs[k]);
      };
    }
    return gen.generate(req);
  }

 private:
  const CommonOptions& o_;
  const GenerateFlags& g_;
  ResolvedModel model_;
  pipelines::PipelineInfo info_;
  std::string dtype_;
  std::unique_ptr<GLIGENGenerator> gen_;
};

json timings_json(const pipelines::GenerateResult& r, double load_ms) {
  return {{"load_ms", load_ms},
          {"text_ms", r.timings.text_ms},
          {"denoise_ms", r.timings.denoise_ms},
          {"unet_calls", r.timings.unet_calls},
          {"unet_ms_per_call", r.timings.unet_ms_per_call},
          {"vae_ms", r.timings.vae_ms},
          {"total_ms", r.timings.total_ms}};
}

// preview path for an output: out.png -> out.preview.png
std::string preview_path(const std::string& out) {
  if (out.empty() || out == "-") return "";
  fs::path p(out);
  return (p.parent_path() / (p.stem().string() + ".preview.png")).string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lli-generate: text + layout boxes with phrases -> image (GLIGEN on Stable Diffusion 1.x)"};
  app.footer(kExamples);
  CommonOptions o;
  FlagSet fs_;
  fs_.image = false;
  fs_.batch = false;
  add_common_flags(app, o, fs_);
  PromptOptions po;
  add_prompt_flags(app, po, /*with_text=*/true);
  GenerateFlags g;
  app.add_option("caption", g.positional_text, "The caption (same as --text)");
  app.add_option("--layout", g.layout, "Layout JSON file: boxes with phrases (+ text), the prompt schema (same as --prompt)");
  app.add_option("--negative-prompt", g.negative_prompt, "What the image should not show (classifier-free guidance)");
  app.add_option("--width", g.width, "Image width (default: the UNet's sample_size x VAE factor, 512 for SD-1.x)");
  app.add_option("--height", g.height, "Image height (default as --width)");
  app.add_option("--steps", g.steps, "Diffusion steps (default 50, models.yaml tools.lli-generate.steps)");
  app.add_option("--guidance", g.guidance, "Classifier-free guidance scale (default 7.5; <= 1 turns guidance off)");
  app.add_option("--beta", g.beta, "GLIGEN scheduled sampling: fraction of steps with grounding (default 0.3, or the model's models.yaml defaults: demo-gligen 1.0)");
  app.add_option("--num-images", g.num_images, "Images per prompt from one noise draw (out-0.png ...)")->capture_default_str();
  app.add_option("--scheduler", g.scheduler, "auto | pndm | ddim | euler | euler-a | dpm++2m (default auto)");
  app.add_option("--eta", g.eta, "DDIM eta (0 = deterministic)")->capture_default_str();
  app.add_flag("--karras", g.karras, "DPM-Solver++ / Euler: Karras sigmas");
  app.add_flag("--no-karras", g.no_karras, "Turn Karras sigmas off even if the scheduler config has them");
  app.add_flag("--vae-tiling", g.vae_tiling, "Decode in overlapping tiles (default: automatic above 768x768)");
  app.add_flag("--no-vae-tiling", g.no_vae_tiling, "Never tile the VAE decode");
  app.add_option("--from-png", g.from_png, "Regenerate from the parameters stored in a PNG made by lli-generate (flags given override them)");
  app.add_option("--batch", g.batch, "JSON Lines file, one image per line (needs --outdir)");
  app.add_option("--outdir", o.outdir, "Batch mode: output directory (created if missing)");
  app.add_flag("--overwrite", o.overwrite, "Batch mode: redo lines whose output already exists");
  app.add_option("--shard", o.shard, "Batch mode: process part K of N (K/N, 1-based)");
  app.add_option("--preview-every", g.preview_every, "Write the current latents decoded every K steps to <out>.preview.png");
  app.add_flag("--layout-from-session", g.layout_from_session,
               "Layout boxes from the session's latest masks (their bounding boxes; phrases from the masks or --phrase)");
  app.add_option("--phrase", g.phrases, "With --layout-from-session: the phrase of each mask, in order (repeatable)");
  // A value flag given twice: the last one wins (scripts append overrides to a base command).
  for (const char* name : {"--negative-prompt", "--width", "--height", "--steps", "--guidance", "--beta", "--num-images",
                           "--scheduler", "--eta", "--seed", "--dtype", "--threads", "--preview-every"})
    app.get_option(name)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  return run_tool("lli-generate", app, argc, argv, o, [&] {
    apply_runtime_options(o, /*uses_torch=*/true);
    if (!g.positional_text.empty() && !po.text.empty()) throw UsageError("give the caption once: as an argument or --text");
    if (!g.positional_text.empty()) po.text = g.positional_text;
    if (!g.layout.empty()) {
      if (!po.prompt_file.empty()) throw UsageError("--layout and --prompt are the same flag; give one");
      po.prompt_file = g.layout;
    }
    if (g.karras && g.no_karras) throw UsageError("--karras and --no-karras are exclusive");
    if (g.vae_tiling && g.no_vae_tiling) throw UsageError("--vae-tiling and --no-vae-tiling are exclusive");
    if (g.preview_every < 0) throw UsageError("--preview-every must be >= 0");
    const Registry& reg = registry(o);

    // Defaults: built-in < models.yaml < the PNG's record (--from-png) < flags.
    GenerateRequest req;
    req.steps = reg.tool_int("lli-generate", "steps", 50);
    req.guidance = reg.tool_double("lli-generate", "guidance", 7.5);
    req.beta = reg.tool_double("lli-generate", "beta", 0.3);
    req.scheduler = reg.tool_string("lli-generate", "scheduler", "auto");
    std::optional<std::uint64_t> seed;
    std::int64_t only_index = -1;  // --from-png of one image of a set: regenerate the set, keep this one
    std::string model_arg = o.model;
    if (!g.from_png.empty()) {
      const json rec = read_png_record(g.from_png);
      const auto& f = g.from_png;
      req.prompt = record_value<std::string>(rec, "prompt", "", f);
      req.negative_prompt = record_value<std::string>(rec, "negative_prompt", "", f);
      req.width = record_value<std::int64_t>(rec, "width", 0, f);
      req.height = record_value<std::int64_t>(rec, "height", 0, f);
      seed = record_value<std::uint64_t>(rec, "seed", 0, f);
      req.steps = record_value<std::int64_t>(rec, "steps", req.steps, f);
      req.scheduler = record_value<std::string>(rec, "scheduler", req.scheduler, f);
      req.guidance = record_value<double>(rec, "guidance", req.guidance, f);
      req.beta = record_value<double>(rec, "beta", req.beta, f);
      req.eta = record_value<double>(rec, "eta", 0.0, f);
      if (rec.contains("karras") && !rec["karras"].is_null()) req.karras = record_value<bool>(rec, "karras", false, f);
      req.num_images = record_value<std::int64_t>(rec, "num_images", 1, f);
      if (req.num_images > 1) only_index = record_value<std::int64_t>(rec, "image_index", 0, f);
      if (model_arg.empty()) model_arg = record_value<std::string>(rec, "model", "", f);
      if (!app.count("--dtype")) o.dtype = record_value<std::string>(rec, "dtype", o.dtype, f);
      if (rec.contains("boxes")) {
        Prompt p = to_pixels(parse_prompt(json{{"boxes", rec["boxes"]}, {"coords", "normalized"}}.dump(), f), 1, 1);
        for (const auto& b : p.boxes) req.boxes.push_back({b.x0, b.y0, b.x1, b.y1, b.phrase});
      }
      log_info("lli-generate: parameters from {} (seed {}, {} steps, {})", f, *seed, req.steps, req.scheduler);
    }
    if (!g.negative_prompt.empty()) req.negative_prompt = g.negative_prompt;
    if (g.width) req.width = g.width;
    if (g.height) req.height = g.height;
    if (g.steps) req.steps = g.steps;
    if (g.guidance >= 0) req.guidance = g.guidance;
    if (g.beta >= 0) req.beta = g.beta;
    if (!g.scheduler.empty()) req.scheduler = g.scheduler;
    if (app.count("--eta")) req.eta = g.eta;
    if (g.karras) req.karras = true;
    if (g.no_karras) req.karras = false;
    if (app.count("--num-images")) {
      req.num_images = g.num_images;
      only_index = -1;
    }
    req.vae_tiling = g.vae_tiling ? pipelines::VAETilingMode::on
                     : g.no_vae_tiling ? pipelines::VAETilingMode::off
                                       : pipelines::VAETilingMode::automatic;
    if (o.seed) {
      if (*o.seed < 0) throw UsageError("--seed must be >= 0");
      seed = static_cast<std::uint64_t>(*o.seed);
    }
    if (!model_arg.empty()) o.model = model_arg;

    (void)parse_dtype(o.dtype);
    const ResolvedModel model = require_model(o, "lli-generate");
    if (model.from_registry) {
      // The model's own defaults (models.<name>.defaults) where neither a flag nor --from-png set
      // the value. A PNG record holds every value, so only flags count after --from-png.
      const bool from_record = !g.from_png.empty();
      std::string taken;  // "steps 20, beta 1"
      if (!from_record && !g.steps && reg.model_default(model.name, "steps")) {
        req.steps = reg.model_int(model.name, "steps", static_cast<int>(req.steps));
        taken += fmt::format("{}steps {}", taken.empty() ? "" : ", ", req.steps);
      }
      if (!from_record && g.guidance < 0 && reg.model_default(model.name, "guidance")) {
        req.guidance = reg.model_double(model.name, "guidance", req.guidance);
        taken += fmt::format("{}guidance {}", taken.empty() ? "" : ", ", req.guidance);
      }
      if (!from_record && g.beta < 0 && reg.model_default(model.name, "beta")) {
        req.beta = reg.model_double(model.name, "beta", req.beta);
        taken += fmt::format("{}beta {}", taken.empty() ? "" : ", ", req.beta);
      }
      if (!taken.empty())
        log_info("lli-generate: {}'s defaults from {}: {}", model.name, reg.config_file().string(), taken);
    }
    Runner runner(o, g, model);
    if (req.width <= 0) req.width = runner.info().default_width;
    if (req.height <= 0) req.height = runner.info().default_height;
    const auto W = req.width, H = req.height;

    // ---- batch: one JSON object per line --------------------------------------------------------
    if (!g.batch.empty()) {
      if (o.outdir.empty()) throw UsageError("--batch needs --outdir");
      if (!o.session.empty()) throw UsageError("--batch and --session are exclusive");
      if (!o.output.empty()) throw UsageError("--batch writes to --outdir; -o is not used");
      const Shard shard = parse_shard(o.shard);
      std::ifstream in(g.batch);
      if (!in) throw InputError(g.batch + ": cannot open the batch file");
      std::error_code ec;
      fs::create_directories(o.outdir, ec);
      if (ec) throw RuntimeError(o.outdir + ": cannot create the output directory: " + ec.message());
      std::string line;
      std::size_t lineno = 0, index = 0;
      int rc = 0;
      std::set<std::string> names;
      while (std::getline(in, line)) {
        ++lineno;
        if (line.find_first_not_of(" \t\r") == std::string::npos || line[line.find_first_not_of(" \t\r")] == '#') continue;
        const std::size_t item = index++;
        const std::string where = g.batch + ":" + std::to_string(lineno);
        json rj;
        std::string out_path;
        try {
          json j = parse_json_bounded(line, where, ExitCode::bad_input, "not a JSON object: ");
          if (!j.is_object()) throw InputError(where + ": not a JSON object");
          GenerateRequest r = req;
          auto take = [&](const char* key, auto& dst) {
            if (!j.contains(key)) return;
            try {
              dst = j[key].get<std::decay_t<decltype(dst)>>();
            } catch (const json::exception&) {
              throw InputError(where + ": '" + std::string(key) + "' has the wrong type");
            }
            j.erase(key);
          };
          std::string name = fmt::format("{:04d}", item);
          std::optional<std::uint64_t> line_seed;
          std::uint64_t s = 0;
          if (j.contains("seed")) {
            take("seed", s);
            line_seed = s;
          }
          take("name", name);
          take("negative_prompt", r.negative_prompt);
          take("steps", r.steps);
          take("guidance", r.guidance);
          take("beta", r.beta);
          take("width", r.width);
          take("height", r.height);
          take("scheduler", r.scheduler);
          if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos ||
              name == "." || name == "..")
            throw InputError(where + ": name " + quote_excerpt(name) + " is not a plain file name");
          if (!names.insert(name).second) throw InputError(where + ": name " + quote_excerpt(name) + " is used twice (outputs would collide)");
          out_path = (fs::path(o.outdir) / (name + ".png")).string();
          if (static_cast<int>(item % static_cast<std::size_t>(shard.n)) != shard.k - 1) continue;
          if (fs::is_symlink(out_path, ec))
            throw InputError(out_path + ": is a symbolic link; lli does not write through or replace links in --outdir");
          if (!o.overwrite && fs::exists(out_path, ec)) {
            log_info("lli-generate: {} exists; skipped (--overwrite redoes it)", out_path);
            continue;
          }
          Prompt p = to_pixels(parse_prompt(j.dump(), where), static_cast<int>(r.width), static_cast<int>(r.height));
          r.prompt = p.text;
          r.boxes = normalized_boxes(p, r.width, r.height);
          r.seed = line_seed ? *line_seed : seed ? *seed + item : random_seed();
          r.num_images = 1;
          pipelines::validate_request(runner.info(), r);
          log_info("lli-generate: [{}] {} (seed {})", item, out_path, r.seed);
          auto res = runner.run(r, "");
          const json rec = request_json(r, runner.model_name(), runner.dtype(), 0);
          write_file_atomic(out_path, encode_output(res.images[0], ".png", rec));
          rj = {{"line", lineno}, {"path", out_path}, {"seed", r.seed}, {"scheduler", res.scheduler},
                {"timings", timings_json(res, 0)}};
        } catch (const InterruptedError&) {
          throw;
        } catch (const Error& e) {
          log_info("lli-generate: error: {}", e.what());
          if (!rc) rc = static_cast<int>(e.code());
          rj = {{"line", lineno}, {"path", out_path}, {"error", e.what()}};
        }
        if (o.json && !rj.is_null()) emit_result(o, rj, "");
      }
      if (rc) throw Error(static_cast<ExitCode>(rc), "some batch lines failed (see above)");
      return;
    }

    // ---- one request -------------------------------------------------------------------------
    SessionContext sc(o, "lli-generate");
    if (!sc.active() && o.output.empty()) throw UsageError("no output: pass -o FILE, or --session");
    if (o.output == "-" && stdout_is_session(o)) throw UsageError("-o - and --session - both want stdout");
    if (o.output == "-" && o.json) throw UsageError("-o - writes the PNG to stdout; --json cannot share it");
    const std::string out_ext = o.output.empty() ? ".png" : output_image_ext(o.output);
    if (o.output == "-" && req.num_images > 1 && only_index < 0)
      throw UsageError("-o - takes one image; --num-images writes numbered files (-o out.png -> out-0.png, ...)");
    if (g.layout_from_session) {
      if (!sc.active()) throw UsageError("--layout-from-session needs --session");
      req.boxes = boxes_from_session(sc.get(), g.phrases);
    } else if (!g.phrases.empty()) {
      throw UsageError("--phrase is for --layout-from-session (inline boxes carry their phrase: --box x0,y0,x1,y1,phrase)");
    }
    if (has_prompt(po)) {
      Prompt p = build_prompt(po, static_cast<int>(W), static_cast<int>(H));
      if (!p.text.empty() || g.from_png.empty()) req.prompt = p.text;
      auto boxes = normalized_boxes(p, W, H);
      if (!boxes.empty()) {
        if (g.layout_from_session) throw UsageError("--layout-from-session and layout boxes are exclusive");
        req.boxes = boxes;
      }
    }
    if (req.prompt.empty() && req.boxes.empty() && g.from_png.empty())
      throw UsageError("nothing to generate: give a caption (argument or --text) and/or a --layout / --box");
    req.seed = seed ? *seed : random_seed();
    if (!seed) log_info("lli-generate: seed {}", req.seed);
    pipelines::validate_request(runner.info(), req);

    auto res = runner.run(req, preview_path(o.output));
    check_interrupted();
    const std::size_t n = res.images.size();
    json images = json::array();
    std::vector<std::pair<std::size_t, std::string>> written;  // (index, path)
    for (std::size_t k = 0; k < n; ++k) {
      if (only_index >= 0 && k != static_cast<std::size_t>(only_index)) continue;
      const json rec = request_json(req, runner.model_name(), runner.dtype(), k);
      json item = {{"index", k}, {"seed", req.seed}};
      if (!o.output.empty()) {
        const std::string path = o.output == "-" ? "-" : only_index >= 0 ? o.output : numbered(o.output, k, n);
        write_file_atomic(path, encode_output(res.images[k], out_ext, rec));
        item["path"] = path == "-" ? "<stdout>" : path;
      }
      if (sc.active()) {
        const int step = sc.get().add_image_step(encode_output(res.images[k], ".png", rec), "png", "lli-generate",
                                                 "generate", rec, static_cast<std::int64_t>(req.seed), std::nullopt);
        item["step"] = step;
        if (!item.contains("path")) item["path"] = sc.get().image_path(step).string();
      }
      images.push_back(item);
    }
    if (sc.active()) sc.save();
    json boxes = json::array();
    for (const auto& b : req.boxes) boxes.push_back({{"box", {b.x0, b.y0, b.x1, b.y1}}, {"phrase", b.phrase}});
    json result = {{"images", images},     {"seed", req.seed},         {"model", runner.model_name()},
                   {"scheduler", res.scheduler}, {"steps", req.steps},   {"unet_calls", res.timings.unet_calls},
                   {"grounding_calls", res.grounding_calls}, {"guidance", req.guidance}, {"beta", req.beta},
                   {"width", W},           {"height", H},              {"boxes", boxes},
                   {"vae_tiled", res.vae_tiled}, {"dtype", runner.dtype()},
                   {"timings", timings_json(res, runner.load_ms())}};
    std::string human;
    for (const auto& it : images)
      human += fmt::format("{}image: {} (seed {}, {} steps, {})", human.empty() ? "" : "\n",
                           it.value("path", std::string("-")), req.seed, req.steps, res.scheduler);
    if (o.output != "-") emit_result(o, result, human);
  });
}
