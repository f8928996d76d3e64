// lli-edit: remove / inpaint / replace / move objects at the photo's own resolution.
//   remove  : mask -> dilation -> LaMa (or OpenCV Telea) -> composite
//   inpaint : boxes with phrases -> GLIGEN inpainting in a square context crop -> composite
//   replace : mask + phrase -> GLIGEN inpainting grounded at the mask's box -> composite through the mask
//   move    : mask + offset / target box -> the object's pixels moved, the hole filled (LaMa), edges
//             blended; --regenerate redraws the object there with GLIGEN inpainting
// Flags, files, sessions and batch only; the image math is in lib/pipelines (edit_region, edit,
// inpaint_lama, generate, inpaint_telea).
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <memory>
#include <random>

#include "common/batch.h"
#include "common/cli.h"
#include "common/grounding.h"
#include "core/activity.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/image.h"
#include "lli/inpaint_telea.h"
#include "lli/log.h"
#include "pipelines/edit.h"
#include "pipelines/edit_region.h"
#include "pipelines/generate.h"
#include "pipelines/inpaint_lama.h"
#include "pipelines/segment_sam.h"

using namespace lli;
using namespace lli::cli;
using namespace lli::pipelines;
using nlohmann::json;

namespace {

const char* kExamples = R"(
Examples:
  lli-edit remove -i photo.jpg --mask mask.png -o clean.png              # LaMa if installed, else Telea
  lli-edit remove --backend lama -m big-lama -i photo.jpg --mask mask.png --dilate 0 -o clean.png --json
  lli-segment -i photo.jpg --box 10,10,90,90 -o - | lli-edit remove -i photo.jpg --mask - -o clean.png
  lli-edit remove --session s.json                                       # the session's image and latest mask
  lli-edit remove --session s.json --from-step 0                         # undo: branch from step 0
  lli-edit remove -i photos/ --mask masks/ --outdir clean/               # batch; masks paired by stem
  lli-edit inpaint -i room.jpg --box 40,200,240,380,"a birthday cake" --text "a cake on a table" -o cake.png
  lli-edit replace -i dog.jpg --mask dog.mask.png --text "a cat" --seed 3 -o cat.png
  lli-edit move -i photo.jpg --mask ball.mask.png --offset -120,10 -o moved.png --blend poisson
  lli-edit move --session s.json --to-box 10,200,110,300 --regenerate --text "a red ball"
  lli-edit replace -i photo.jpg --target "the dog" "a cat" -o cat.png   # grounded: no mask needed
  lli-edit remove -i photo.jpg --target "the ball" -o clean.png
  lli-edit remove --backend lama -m demo-lama -i scene.png --mask obj.png -o clean.png  # lli's shapes-world demo LaMa
--target PHRASE finds the object itself: a text grounder (OWLv2 / OWL-ViT, or --grounder llava) gives
its box, SAM (--sam-model, default models.yaml tools.lli-segment.model) its mask; without SAM the box
is the mask. --all-instances takes every detection. No detection above --box-threshold: exit 3.
Masks: every non-zero pixel is the object (as LaMa). Defaults: remove/move dilate the mask by round(50 * longer side / 512) px (the seed system's 50 px at
512 px; --dilate 0 = none); inpaint/replace run GLIGEN inpainting (models.yaml tools.lli-edit.inpaint_model)
with beta 1.0 on a square crop around the region (+ --context px) resized to the model's size, and paste
only the region (+ --feather px): every other pixel is bit-identical to the input.
Exit codes: 0 ok, 2 usage, 3 bad input, 4 model/backend, 5 runtime, 130 interrupted.)";

// ---- options --------------------------------------------------------------------------------------
struct EditOptions {
  std::string mask;
  std::string backend;  // remove / move hole filler: auto | lama | telea
  int dilate = -1;      // -1 = default (scaled; models.yaml tools.lli-edit.dilate overrides)
  double radius = 5.0;  // telea
  int max_side = 1024;  // lama: crop strategy above this
  // diffusion (inpaint, replace, move --regenerate)
  std::string text;     // inpaint: caption; replace / move --regenerate: the phrase
  std::string caption;  // replace / move: an optional caption (default: the phrase)
  std::string negative_prompt;
  int steps = 0;
  double guidance = -1, beta = -1;
  std::string scheduler;
  int feather = 8;
  int context = -1;  // -1 = a quarter of the region's longer side, at least 32 px
  std::int64_t noise_seed = -1;
  std::string gligen_model;  // move --regenerate
  // move
  std::string offset, to_box, blend = "alpha";
  bool regenerate = false;
  // --target: the object named instead of a mask (remove / replace / move)
  std::string target;
  std::string sam_model;
  GroundingOptions grounding;
  std::string positional_text;  // replace: `--target "the dog" "a cat"`
};

std::uint64_t random_seed() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 16 ^ rd()) & 0xffffffffull;
}

cv::Rect mask_box(const cv::Mat& mask, const std::string& name) {
  const cv::Rect r = cv::boundingRect(mask > 0);
  if (r.area() == 0) throw InputError(name + ": the mask is empty (nothing to edit)");
  return r;
}

// lli-edit's masks: every non-zero pixel is the object (LaMa's and IOPaint's rule: a soft or
// anti-aliased edge counts as hole), unlike lli's general > 127 reading. cv::Mat CV_8UC1 0/255.
cv::Mat read_edit_mask(const std::string& path) {
  const cv::Mat img = read_image(path).bgr;
  cv::Mat grey;
  if (img.channels() == 1)
    grey = img;
  else
    cv::cvtColor(img, grey, img.channels() == 4 ? cv::COLOR_BGRA2GRAY : cv::COLOR_BGR2GRAY);
  return grey > 0;
}

// Mask of the session's input step: the union of the latest masks made on that step.
cv::Mat session_mask(Session& s, int step) {
  const auto& masks = s.latest_masks();
  if (masks.empty()) throw InputError(s.name() + ": the session has no mask; run lli-segment first or pass --mask");
  cv::Mat acc;
  for (const auto& m : masks) {
    if (m.step != step) continue;
    cv::Mat mk = read_edit_mask(s.mask_path(m).string());
    if (acc.empty())
      acc = mk;
    else {
      require_same_size(mk, acc, m.file);
      cv::bitwise_or(acc, mk, acc);
    }
  }
  if (acc.empty())
    throw InputError(s.name() + ": the latest mask was made on step " + std::to_string(masks.back().step) +
                     ", not on step " + std::to_string(step) + " (the input); run lli-segment on it or pass --mask");
  return acc;
}

std::pair<int, int> parse_pair(const std::string& flag, const std::string& v) {
  int a = 0, b = 0;
  char c = 0, extra = 0;
  if (std::sscanf(v.c_str(), "%d%c%d%c", &a, &c, &b, &extra) != 3 || c != ',')
    throw UsageError(flag + " '" + v + "': expected two integers dx,dy");
  return {a, b};
}

cv::Rect parse_box(const std::string& flag, const std::string& v) {
  double x0, y0, x1, y1;
  char c1 = 0, c2 = 0, c3 = 0, extra = 0;
  if (std::sscanf(v.c_str(), "%lf%c%lf%c%lf%c%lf%c", &x0, &c1, &y0, &c2, &x1, &c3, &y1, &extra) != 7 || c1 != ',' ||
      c2 != ',' || c3 != ',')
    throw UsageError(flag + " '" + v + "': expected x0,y0,x1,y1 in pixels");
  if (!(x1 > x0 && y1 > y0)) throw UsageError(flag + " '" + v + "': needs x0 < x1 and y0 < y1");
  return cv::Rect(cv::Point(static_cast<int>(std::lround(x0)), static_cast<int>(std::lround(y0))),
                  cv::Point(static_cast<int>(std::lround(x1)), static_cast<int>(std::lround(y1))));
}

// ---- models (loaded once, on first use) -----------------------------------------------------------
class Models {
 public:
  Models(const CommonOptions& o, const EditOptions& e) : o_(o), e_(e) {}

  // The remove / move hole filler: "lama" or "telea" (auto: lama when its checkpoint is installed).
  std::string resolve_backend(const std::string& requested) {
    std::string b = requested.empty() ? registry(o_).tool_string("lli-edit", "backend", "auto") : requested;
    if (b != "auto" && b != "lama" && b != "telea") throw UsageError("--backend '" + b + "': expected auto, lama or telea");
    if (b != "auto") return b;
    try {
      // auto takes LaMa only when the configured (or -m) checkpoint is installed: not the demo
      // model, which knows only the shapes world (Telea does better on photos)
      const ResolvedModel m = registry(o_).resolve_model(lama_model_name());
      if (lama_model_present(m.dir)) return "lama";
      log_info("lli-edit: {} has no generator.safetensors + config.yaml; using the telea backend", m.dir.string());
    } catch (const ModelError&) {
      log_info("lli-edit: LaMa ('{}') is not installed; using the telea backend (--backend lama: the shapes-world demo LaMa when installed, else why not)", lama_model_name());
    }
    return "telea";
  }

  std::string lama_model_name() const {
    return o_.model.empty() ? registry(o_).tool_string("lli-edit", "model", "big-lama") : o_.model;
  }
  // -m, else models.yaml's model; when that default is not installed, the demo LaMa (demo-lama).
  ResolvedModel lama_model() const { return resolve_or_demo(registry(o_), lama_model_name(), !o_.model.empty(), "lli-edit"); }

  LamaInpainter& lama() {
    if (!lama_) {
      const ResolvedModel m = lama_model();
      LamaOptions lo;
      lo.device = parse_device(o_.device);
      lo.dtype = parse_dtype(o_.dtype);
      lo.max_side = e_.max_side;
      const double t0 = now_ms();
      Activity loading("loading the model " + m.name);
      lama_ = std::make_unique<LamaInpainter>(m.dir, lo);
      lama_name_ = m.name;
      log_info("lli-edit: loaded {} in {:.0f} ms ({})", m.name, now_ms() - t0, lama_->describe());
    }
    return *lama_;
  }
  const std::string& lama_name() const { return lama_name_; }

  // GLIGEN inpainting: -m for inpaint/replace, --gligen-model for move (registry: inpaint_model).
  // ModelError when it is not installed (cheap: checked before any image is read).
  ResolvedModel gligen_model(bool from_m) const {
    const Registry& reg = registry(o_);
    std::string name = from_m && !o_.model.empty() ? o_.model : e_.gligen_model;
    if (name.empty()) name = reg.tool_string("lli-edit", "inpaint_model", "gligen-inpainting");
    return reg.resolve_model(name);
  }

  GLIGENGenerator& gligen(bool from_m) {
    if (!gligen_) {
      const ResolvedModel m = gligen_model(from_m);
      GenerateOptions go;
      go.device = parse_device(o_.device);
      go.dtype = parse_dtype(o_.dtype);
      Activity loading("loading the model " + m.name);
      gligen_ = std::make_unique<GLIGENGenerator>(m.dir, go);
      gligen_name_ = m.name;
      log_info("lli-edit: loaded {} in {:.0f} ms ({})", m.name, gligen_->load_ms(), gligen_->describe());
      if (!gligen_->info().inpainting)
        throw ModelError(m.dir.string() + ": not a GLIGEN inpainting checkpoint (UNet in_channels " +
                         std::to_string(gligen_->info().in_channels) + "; e.g. masterful/gligen-1-4-inpainting-text-box)");
    }
    return *gligen_;
  }
  const std::string& gligen_name() const { return gligen_name_; }

  // --target: the text grounder, loaded at the first use.
  const TextGrounder& grounder() {
    if (!grounder_) grounder_ = std::make_unique<TextGrounder>(o_, e_.grounding, "lli-edit");
    return *grounder_;
  }

  // --target: SAM (--sam-model, else models.yaml tools.lli-segment.model), loaded at the first use;
  // null when no SAM checkpoint is named or the default one is not installed (the box is the mask).
  // A --sam-model that fails to load fails every batch item, not only the first.
  SamSegmenter* target_sam() {
    if (sam_tried_) return sam_.get();
    std::string name = e_.sam_model.empty() ? registry(o_).tool_string("lli-segment", "model", "") : e_.sam_model;
    sam_tried_ = name.empty();
    if (name.empty()) return nullptr;
    try {
      const ResolvedModel m = registry(o_).resolve_model(name);
      SamOptions so;
      so.device = parse_device(o_.device);
      so.dtype = parse_dtype(o_.dtype);
      Activity loading("loading the model " + m.name);
      sam_ = std::make_unique<SamSegmenter>(m.dir, so);
      sam_name_ = m.name;
    } catch (const ModelError&) {
      if (!e_.sam_model.empty()) throw;
      log_info("lli-edit: SAM ('{}') is not installed; the grounded box is the mask", name);
    }
    sam_tried_ = true;
    return sam_.get();
  }
  const std::string& target_sam_name() const { return sam_name_; }

 private:
  const CommonOptions& o_;
  const EditOptions& e_;
  std::unique_ptr<LamaInpainter> lama_;
  std::unique_ptr<GLIGENGenerator> gligen_;
  std::unique_ptr<TextGrounder> grounder_;
  std::unique_ptr<SamSegmenter> sam_;
  bool sam_tried_ = false;
  std::string lama_name_, gligen_name_, sam_name_;
};

// The mask of the object named by --target: grounded boxes (every instance or the best one), each
// turned into a mask by SAM when a SAM checkpoint is available, else filled. Fills `info`.
// The grounder and SAM come from `models` (loaded once for a whole batch).
cv::Mat target_mask(const EditOptions& e, Models& models, const cv::Mat& bgr, Session* session, const std::string& sha,
                    json& info) {
  const TextGrounder& g = models.grounder();
  GroundingRun run = g.run(bgr, {e.target}, session, sha);
  if (run.selected.empty())
    throw InputError("no detection of \"" + e.target.substr(0, 60) + "\" above --box-threshold " +
                     fmt::format("{}", e.grounding.box_threshold) +
                     (run.best.empty() || !run.best[0].score ? std::string()
                                                              : fmt::format(" (best score {:.3f})", *run.best[0].score)));
  SamSegmenter* sam = models.target_sam();
  const std::string& sam_name = models.target_sam_name();
  cv::Mat mask = cv::Mat::zeros(bgr.size(), CV_8UC1);
  json boxes = json::array();
  if (sam) {
    SamPrompt sp;
    for (const auto& b : run.selected) sp.boxes.push_back({b.x0, b.y0, b.x1, b.y1});
    for (const auto& m : sam->segment(sam->compute_embedding(bgr), sp)) cv::bitwise_or(mask, m.mask, mask);
  } else {
    for (const auto& b : run.selected) {
      const cv::Rect r = cv::Rect(cv::Point(static_cast<int>(std::floor(b.x0)), static_cast<int>(std::floor(b.y0))),
                                  cv::Point(static_cast<int>(std::ceil(b.x1)), static_cast<int>(std::ceil(b.y1)))) &
                         cv::Rect(0, 0, bgr.cols, bgr.rows);
      mask(r).setTo(255);
    }
  }
  for (const auto& b : run.selected) boxes.push_back(b.to_json());
  info["target"] = e.target;
  info["grounder"] = g.kind();
  info["grounder_model"] = g.model_name();
  info["target_boxes"] = boxes;
  info["target_mask_from"] = sam ? "sam " + sam_name : std::string("box");
  log_info("lli-edit: \"{}\": {} box(es) from {}, mask from {}", e.target.substr(0, 60), run.selected.size(), g.model_name(),
           sam ? sam_name : std::string("the box"));
  if (cv::countNonZero(mask) == 0) throw InputError("the mask of \"" + e.target.substr(0, 60) + "\" is empty");
  return mask;
}

// ---- one edit ------------------------------------------------------------------------------------
struct EditInput {
  cv::Mat bgr;
  cv::Mat mask;  // remove / replace / move
  json target_info = json::object();  // --target: how the mask was found
  Prompt prompt;  // inpaint (pixels)
  std::string mask_name;
};

struct EditOutcome {
  cv::Mat image;
  cv::Mat changed;
  json info = json::object();  // op-specific fields, params for the session step
  std::optional<std::int64_t> seed;
};

class Editor {
 public:
  Editor(const std::string& op, const CommonOptions& o, EditOptions& e, Models& models)
      : op_(op), o_(o), e_(e), models_(models) {}

  // Resolves defaults that do not depend on the image (backend, diffusion settings) and checks flags.
  void prepare() {
    const Registry& reg = registry(o_);
    if (op_ == "remove" || op_ == "move") backend_ = models_.resolve_backend(e_.backend);
    if (e_.feather < 0) throw UsageError("--feather must be >= 0");
    if (e_.max_side < 0) throw UsageError("--max-side must be >= 0");
    if (op_ == "replace" && e_.text.empty()) throw UsageError("replace needs --text: what to put in place of the object");
    if (op_ == "move") {
      if (e_.offset.empty() == e_.to_box.empty()) throw UsageError("move needs exactly one of --offset dx,dy and --to-box x0,y0,x1,y1");
      if (!e_.offset.empty()) (void)parse_pair("--offset", e_.offset);
      if (!e_.to_box.empty()) (void)parse_box("--to-box", e_.to_box);
      (void)parse_blend_mode(e_.blend);
      if (e_.regenerate && e_.text.empty()) throw UsageError("move --regenerate needs --text: the object's phrase");
    }
    diffusion_ = op_ == "inpaint" || op_ == "replace" || (op_ == "move" && e_.regenerate);
    if (diffusion_) {
      gen_.steps = e_.steps > 0 ? e_.steps : reg.tool_int("lli-edit", "steps", 50);
      gen_.guidance = e_.guidance >= 0 ? e_.guidance : reg.tool_double("lli-edit", "guidance", 7.5);
      gen_.beta = e_.beta >= 0 ? e_.beta : reg.tool_double("lli-edit", "beta", 1.0);
      gen_.scheduler = !e_.scheduler.empty() ? e_.scheduler : reg.tool_string("lli-edit", "scheduler", "auto");
      gen_.negative_prompt = e_.negative_prompt;
      if (e_.steps < 0) throw UsageError("--steps must be positive");
      (void)models_.gligen_model(op_ != "move");  // a missing checkpoint fails before any work
    }
    if (backend_ == "lama") (void)models_.lama_model();
  }
  bool diffusion() const { return diffusion_; }

  EditOutcome run(const EditInput& in) {
    Activity editing(fmt::format("editing ({}) a {}x{} image", op_, in.bgr.cols, in.bgr.rows));
    if (op_ == "remove") return remove(in);
    if (op_ == "inpaint") return inpaint(in);
    if (op_ == "replace") return replace(in);
    return move(in);
  }

 private:
  int dilate_for(cv::Size s) const {
    if (e_.dilate >= 0) return e_.dilate;
    const int reg = registry(o_).tool_int("lli-edit", "dilate", -1);
    return reg >= 0 ? reg : default_dilate(s);
  }

  FillFn filler() {
    if (backend_ == "lama") {
      LamaInpainter& l = models_.lama();
      return [&l](const cv::Mat& bgr, const cv::Mat& mask) { return l.inpaint(bgr, mask); };
    }
    return [this](const cv::Mat& bgr, const cv::Mat& mask) {
      TeleaOptions to;
      to.dilate = 0;
      to.radius = e_.radius;
      return inpaint_telea(bgr, mask, to, "mask").image;
    };
  }

  EditOutcome remove(const EditInput& in) {
    require_same_size(in.mask, in.bgr, in.mask_name);
    const int d = dilate_for(in.bgr.size());
    cv::Mat hole = dilate_mask(in.mask, d);
    EditOutcome out;
    const double t0 = now_ms();
    out.image = cv::countNonZero(hole) ? filler()(in.bgr, hole) : in.bgr.clone();
    out.image = composite(in.bgr, out.image, feather_alpha(hole, 0));  // outside the hole: the input's pixels
    out.changed = hole;
    out.info = {{"backend", backend_}, {"dilate", d}, {"mask", in.mask_name}};
    if (backend_ == "telea") out.info["radius"] = e_.radius;
    if (backend_ == "lama") {
      out.info["model"] = models_.lama_name();
      out.info["cropped"] = models_.lama().timings().cropped;
    }
    timings_ = {{"edit_ms", now_ms() - t0}};
    return out;
  }

  GenerateRequest diffusion_request(std::uint64_t seed) {
    GenerateRequest g = gen_;
    g.seed = seed;
    if (e_.noise_seed >= 0) g.noise_seed = static_cast<std::uint64_t>(e_.noise_seed);
    std::shared_ptr<Progress> bar;
    g.on_step = [bar](int i, int n) mutable {
      if (!bar) bar = std::make_shared<Progress>("denoising", n);
      bar->update(i + 1);
      if (i + 1 == n) bar->finish();
    };
    return g;
  }

  int context_for(const cv::Rect& roi) const {
    if (e_.context >= 0) return e_.context;
    return std::max(32, std::max(roi.width, roi.height) / 4);
  }

  EditOutcome finish_diffusion(const InpaintRegionResult& r, std::uint64_t seed, json info) {
    EditOutcome out;
    out.image = r.image;
    out.changed = r.changed;
    out.seed = static_cast<std::int64_t>(seed);
    info["model"] = models_.gligen_name();
    info["steps"] = gen_.steps;
    info["guidance"] = gen_.guidance;
    info["beta"] = gen_.beta;
    info["scheduler"] = r.generated.scheduler;
    info["feather"] = e_.feather;
    info["crop"] = {r.crop.rect.x, r.crop.rect.y, r.crop.rect.x + r.crop.rect.width, r.crop.rect.y + r.crop.rect.height};
    info["model_size"] = r.model_size;
    if (!gen_.negative_prompt.empty()) info["negative_prompt"] = gen_.negative_prompt;
    timings_["text_ms"] = r.generated.timings.text_ms;
    timings_["denoise_ms"] = r.generated.timings.denoise_ms;
    timings_["unet_ms_per_call"] = r.generated.timings.unet_ms_per_call;
    timings_["vae_ms"] = r.generated.timings.vae_ms;
    out.info = info;
    return out;
  }

  std::uint64_t next_seed() {
    if (o_.seed) {
      if (*o_.seed < 0) throw UsageError("--seed must be >= 0");
      return static_cast<std::uint64_t>(*o_.seed);
    }
    const auto s = random_seed();
    log_info("lli-edit: seed {}", s);
    return s;
  }

  // One box grounded with --text, captioned by --caption (replace, move --regenerate); `region`
  // empty = the box itself is the region.
  InpaintRegionRequest box_request(const cv::Mat& image, const cv::Rect& box, const cv::Mat& region,
                                   std::uint64_t seed) {
    InpaintRegionRequest rq;
    rq.image = image;
    rq.boxes.push_back({cv::Rect2d(box), e_.text});
    rq.caption = e_.caption;
    rq.region = region;
    rq.feather = e_.feather;
    rq.context = context_for(box);
    rq.generate = diffusion_request(seed);
    return rq;
  }

  EditOutcome inpaint(const EditInput& in) {
    const Prompt& p = in.prompt;
    if (!p.points.empty() || !p.strokes.empty())
      throw InputError(p.source + ": inpaint takes boxes with phrases; points and strokes have no meaning here");
    if (p.boxes.empty()) throw UsageError("inpaint needs boxes with phrases: --box x0,y0,x1,y1,phrase or --prompt FILE");
    InpaintRegionRequest rq;
    rq.image = in.bgr;
    json boxes = json::array();
    cv::Rect roi;
    for (const auto& b : p.boxes) {
      if (b.phrase.empty())
        throw InputError((b.origin.empty() ? p.source : b.origin) + ": a box needs a phrase (what to draw there)");
      rq.boxes.push_back({cv::Rect2d(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0), b.phrase});
      boxes.push_back({{"box", {b.x0, b.y0, b.x1, b.y1}}, {"phrase", b.phrase}});
      const cv::Rect r(cv::Point(static_cast<int>(b.x0), static_cast<int>(b.y0)),
                       cv::Point(static_cast<int>(std::ceil(b.x1)), static_cast<int>(std::ceil(b.y1))));
      roi = roi.area() ? roi | r : r;
    }
    rq.caption = e_.text.empty() ? p.text : e_.text;
    rq.feather = e_.feather;
    rq.context = context_for(roi);
    const auto seed = next_seed();
    rq.generate = diffusion_request(seed);
    const double t0 = now_ms();
    auto r = inpaint_region(models_.gligen(true), rq);
    timings_ = {{"edit_ms", now_ms() - t0}};
    return finish_diffusion(r, seed, {{"boxes", boxes}, {"caption", rq.caption}, {"context", rq.context}});
  }

  EditOutcome replace(const EditInput& in) {
    require_same_size(in.mask, in.bgr, in.mask_name);
    // The object's region grown a little (its outline is redrawn too), the GLIGEN box its bounding box.
    const int d = e_.dilate >= 0 ? e_.dilate : std::max(2, default_dilate(in.bgr.size()) / 5);
    cv::Mat region = dilate_mask(in.mask, d);
    const cv::Rect box = mask_box(region, in.mask_name);
    const auto seed = next_seed();
    const InpaintRegionRequest rq = box_request(in.bgr, box, region, seed);
    const double t0 = now_ms();
    auto r = inpaint_region(models_.gligen(true), rq);
    timings_ = {{"edit_ms", now_ms() - t0}};
    return finish_diffusion(r, seed,
                            {{"phrase", e_.text}, {"caption", e_.caption}, {"dilate", d}, {"mask", in.mask_name},
                             {"box", {box.x, box.y, box.x + box.width, box.y + box.height}}, {"context", rq.context}});
  }

  EditOutcome move(const EditInput& in) {
    require_same_size(in.mask, in.bgr, in.mask_name);
    MovePlan plan;
    plan.from = mask_box(in.mask, in.mask_name);
    if (!e_.offset.empty()) {
      const auto [dx, dy] = parse_pair("--offset", e_.offset);
      plan.to = plan.from + cv::Point(dx, dy);
    } else {
      plan.to = parse_box("--to-box", e_.to_box);
    }
    plan.dilate = dilate_for(in.bgr.size());
    plan.feather = std::min(e_.feather, 4);
    plan.blend = parse_blend_mode(e_.blend);
    const double t0 = now_ms();
    MoveResult m = move_object(in.bgr, in.mask, plan, filler(), /*paste=*/!e_.regenerate);
    json info = {{"mask", in.mask_name},
                 {"backend", backend_},
                 {"dilate", plan.dilate},
                 {"from", {plan.from.x, plan.from.y, plan.from.x + plan.from.width, plan.from.y + plan.from.height}},
                 {"to", {plan.to.x, plan.to.y, plan.to.x + plan.to.width, plan.to.y + plan.to.height}},
                 {"blend", blend_mode_name(plan.blend)},
                 {"regenerate", e_.regenerate},
                 {"out_of_frame", m.to_clipped.area() == 0}};
    if (backend_ == "lama") info["lama_model"] = models_.lama_name();
    if (m.to_clipped.area() == 0) log_info("lli-edit move: the target is outside the image; the object is removed");
    timings_ = {{"fill_ms", now_ms() - t0}};
    if (!e_.regenerate || m.to_clipped.area() == 0) {
      EditOutcome out;
      out.image = m.image;
      out.changed = m.changed;
      out.info = info;
      timings_["edit_ms"] = now_ms() - t0;
      return out;
    }
    // Redraw the object at its new place with GLIGEN inpainting (the seed system's "drag").
    const auto seed = next_seed();
    auto r = inpaint_region(models_.gligen(false), box_request(m.background, m.to_clipped, cv::Mat(), seed));
    info["phrase"] = e_.text;
    auto out = finish_diffusion(r, seed, info);
    out.changed = out.changed | m.hole;
    timings_["edit_ms"] = now_ms() - t0;
    return out;
  }

 public:
  json timings_ = json::object();

 private:
  std::string op_;
  const CommonOptions& o_;
  EditOptions& e_;
  Models& models_;
  std::string backend_;
  bool diffusion_ = false;
  GenerateRequest gen_;
};

void add_diffusion_flags(CLI::App* sub, EditOptions& e, bool text_is_phrase) {
  sub->add_option("--text", e.text,
                  text_is_phrase ? "The phrase: what to draw (GLIGEN grounds it in the object's box)"
                                 : "Caption for the whole crop (default: the phrases joined with 'and')");
  if (text_is_phrase) sub->add_option("--caption", e.caption, "Caption for the whole crop (default: the phrase)");
  sub->add_option("--negative-prompt", e.negative_prompt, "What the result should not show");
  sub->add_option("--steps", e.steps, "Diffusion steps (default 50)");
  sub->add_option("--guidance", e.guidance, "Classifier-free guidance (default 7.5)");
  sub->add_option("--beta", e.beta, "GLIGEN scheduled sampling: fraction of steps with grounding (default 1.0)");
  sub->add_option("--scheduler", e.scheduler, "auto | pndm | ddim | euler | euler-a | dpm++2m");
  sub->add_option("--context", e.context, "Context pixels around the region in the square crop (default: a quarter of its side, >= 32)");
  sub->add_option("--feather", e.feather, "Soft edge of the pasted result, pixels outside the region")->capture_default_str();
  sub->add_option("--noise-seed", e.noise_seed,
                  "Seed of the draws the reference takes from torch's global RNG (default: --seed)");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lli-edit: remove, inpaint, replace or move objects in an image"};
  app.footer(kExamples);
  app.require_subcommand(1, 1);
  app.fallthrough();
  CommonOptions o;
  add_common_flags(app, o);
  EditOptions e;
  PromptOptions po;

  auto* remove = app.add_subcommand("remove", "Remove the masked object and fill the hole (LaMa; OpenCV Telea fallback)");
  auto* inpaint = app.add_subcommand("inpaint", "Draw new objects into boxes from phrases (GLIGEN inpainting)");
  auto* replace = app.add_subcommand("replace", "Redraw the masked object as something else (GLIGEN inpainting)");
  auto* move = app.add_subcommand("move", "Move the masked object (its pixels; LaMa fills the hole)");
  for (auto* sub : {remove, replace, move})
    sub->add_option("--mask", e.mask, "Mask PNG of the object (non-zero = object; '-' = stdin; batch: a directory)");
  for (auto* sub : {remove, move}) {
    sub->add_option("--backend", e.backend,
                    "Hole filler: auto (lama when -m or models.yaml's model is installed, else telea) | lama (without "
                    "-m: the default LaMa, or lli's shapes-world demo-lama when that is not installed) | telea");
    sub->add_option("--dilate", e.dilate, "Grow the mask by this many pixels first (default: 50 px per 512 px of the longer side)")
        ->check(CLI::Range(0, 4096));
    sub->add_option("--radius", e.radius, "telea: neighbourhood radius")->capture_default_str()->check(CLI::PositiveNumber);
    sub->add_option("--max-side", e.max_side, "lama: above this longer side, run on crops around the mask")->capture_default_str();
  }
  replace->add_option("--dilate", e.dilate, "Grow the object mask by this many pixels (default: a fifth of remove's)")
      ->check(CLI::Range(0, 4096));
  for (auto* sub : {remove, replace, move}) {
    sub->add_option("--target", e.target, "Find the object by name instead of --mask (a text grounder + SAM)");
    sub->add_option("--sam-model", e.sam_model, "--target: the SAM checkpoint (default models.yaml tools.lli-segment.model; "
                                                "none installed: the box is the mask)");
    add_grounding_flags(*sub, e.grounding);
  }
  replace->add_option("phrase", e.positional_text, "What to put in its place (the same as --text)");
  add_prompt_flags(*inpaint, po, /*with_text=*/false);
  add_diffusion_flags(inpaint, e, /*text_is_phrase=*/false);
  add_diffusion_flags(replace, e, /*text_is_phrase=*/true);
  add_diffusion_flags(move, e, /*text_is_phrase=*/true);
  move->add_option("--offset", e.offset, "Move by dx,dy pixels");
  move->add_option("--to-box", e.to_box, "Move (and scale) the object into x0,y0,x1,y1");
  move->add_option("--blend", e.blend, "Edges of the pasted object: alpha | poisson")->capture_default_str();
  move->add_flag("--regenerate", e.regenerate, "Redraw the object at its new place with GLIGEN inpainting (needs --text)");
  move->add_option("--gligen-model", e.gligen_model, "--regenerate: the GLIGEN inpainting checkpoint (default models.yaml inpaint_model)");

  return run_tool("lli-edit", app, argc, argv, o, [&] {
    const std::string op = remove->parsed() ? "remove" : inpaint->parsed() ? "inpaint" : replace->parsed() ? "replace" : "move";
    if (!e.positional_text.empty()) {
      if (!e.text.empty()) throw UsageError("replace: give the new phrase once (--text or the positional argument)");
      e.text = e.positional_text;
    }
    if (!e.target.empty() && !e.mask.empty()) throw UsageError("--target and --mask exclude each other");
    if (!e.target.empty() && e.target.find_first_not_of(" \t\r\n") == std::string::npos)
      throw UsageError("--target: an empty phrase");
    Models models(o, e);
    Editor ed(op, o, e, models);
    // Torch threads/device only matter for the neural paths (checked again when a model loads).
    apply_runtime_options(o, /*uses_torch=*/op != "remove" || e.backend != "telea" || !e.target.empty());
    ed.prepare();
    const bool needs_mask = op != "inpaint";

    auto load_input = [&](const std::string& image_path, const std::string& mask_path, const std::string& prompt_file,
                          Session* session, int step) {
      EditInput in;
      in.bgr = read_image(image_path).bgr;
      if (needs_mask) {
        if (!e.target.empty()) {
          const std::string sha = session && step >= 0 ? session->step(step).sha256 : "";
          in.mask = target_mask(e, models, in.bgr, session, sha, in.target_info);
          in.mask_name = "the mask of \"" + e.target.substr(0, 40) + "\"";
        } else if (!mask_path.empty()) {
          in.mask = read_edit_mask(mask_path);
          in.mask_name = mask_path == "-" ? "<stdin>" : mask_path;
        } else if (session) {
          in.mask = session_mask(*session, step);
          in.mask_name = "session mask";
        } else {
          throw UsageError("no mask: pass --mask FILE (or --mask - for stdin) or use --session after lli-segment");
        }
        require_same_size(in.mask, in.bgr, in.mask_name);
      } else {
        in.prompt = build_prompt(po, in.bgr.cols, in.bgr.rows, prompt_file);
      }
      return in;
    };

    // ---- batch ------------------------------------------------------------------------------------
    if (is_batch_input(o.image)) {
      std::error_code ec;
      const bool mask_dir = !e.mask.empty() && fs::is_directory(e.mask, ec);
      const bool prompt_dir = !po.prompt_file.empty() && fs::is_directory(po.prompt_file, ec);
      if (needs_mask && !mask_dir && e.target.empty()) throw UsageError("batch mode needs --mask DIR holding <stem>.mask.png or <stem>.png per image");
      int rc = run_batch(
          o, "lli-edit", [&](const fs::path& in) { return fs::path(o.outdir) / (in.stem().string() + ".png"); },
          [&](const BatchItem& item, nlohmann::json& result) {
            std::string mpath, pfile;
            if (needs_mask && e.target.empty()) {
              auto m = find_by_stem(e.mask, item.stem, {".mask", ""}, {".png", ".jpg", ".jpeg", ".webp", ".bmp"});
              if (!m) throw InputError(e.mask + ": no mask " + item.stem + ".mask.png or " + item.stem + ".png for " +
                                       item.input.string());
              mpath = m->string();
            }
            if (prompt_dir) {
              auto f = find_by_stem(po.prompt_file, item.stem, {""}, {".json"});
              if (!f) throw InputError(po.prompt_file + ": no " + item.stem + ".json for " + item.input.string());
              pfile = f->string();
            }
            PromptOptions saved = po;
            if (prompt_dir) po.prompt_file.clear();
            EditInput in;
            try {
              in = load_input(item.input.string(), mpath, pfile, nullptr, -1);
            } catch (...) {
              po = saved;
              throw;
            }
            po = saved;
            EditOutcome out = ed.run(in);
            write_image(item.output.string(), out.image);
            result["op"] = op;
            result["changed_area"] = cv::countNonZero(out.changed);
            if (!mpath.empty()) result["mask"] = mpath;
            if (out.seed) result["seed"] = *out.seed;
            result["timings"] = ed.timings_;
          });
      if (rc) throw Error(static_cast<ExitCode>(rc), "some batch items failed (see above)");
      return;
    }

    // ---- one image ------------------------------------------------------------------------------
    SessionContext sc(o, "lli-edit");
    if (!sc.active() && o.output.empty()) throw UsageError("no output: pass -o FILE (or -o - for PNG on stdout) or --session");
    if (o.output == "-" && stdout_is_session(o)) throw UsageError("-o - and --session - both want stdout");
    if (o.output == "-" && o.json) throw UsageError("-o - writes the image to stdout; --json cannot share it");
    if (e.mask == "-" && (o.image == "-" || o.session == "-")) throw UsageError("--mask - needs stdin, which is already used");
    if (!o.output.empty()) (void)output_image_ext(o.output);  // a bad extension fails before any work
    if (!needs_mask && !e.mask.empty()) throw UsageError("inpaint takes boxes (--box / --prompt), not --mask");
    const std::string input = sc.input_image();
    EditInput in = load_input(input, e.mask, "", sc.active() ? &sc.get() : nullptr, sc.input_step());
    check_not_overwriting(o.output, {input, e.mask, po.prompt_file}, false);
    log_info("lli-edit {}: {} ({}x{}){}", op, input, in.bgr.cols, in.bgr.rows,
             in.mask_name.empty() ? "" : ", mask " + in.mask_name);
    EditOutcome out = ed.run(in);
    check_interrupted();
    for (const auto& [k, v] : in.target_info.items()) out.info[k] = v;

    json result = {{"image", input}, {"op", op}, {"changed_area", cv::countNonZero(out.changed)}, {"timings", ed.timings_}};
    for (const auto& [k, v] : out.info.items()) result[k] = v;
    if (out.seed) result["seed"] = *out.seed;
    if (!o.output.empty()) {
      write_image(o.output, out.image);
      result["output"] = o.output == "-" ? "<stdout>" : o.output;
    }
    if (sc.active()) {
      const std::string ext = o.output.empty() || o.output == "-" ? "png" : output_image_ext(o.output).substr(1);
      const int step = sc.get().add_image_step(encode_image(out.image, "." + ext), ext, "lli-edit", op, out.info,
                                               out.seed, sc.input_step());
      result["step"] = step;
      if (!result.contains("output")) result["output"] = sc.get().image_path(step).string();
      sc.save();
    }
    emit_result(o, result, o.output == "-" ? "" : "edited: " + result["output"].get<std::string>());
  });
}
