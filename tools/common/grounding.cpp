#include "common/grounding.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/activity.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"
#include "models/config_json.h"
#include "pipelines/ground_llava.h"
#include "pipelines/ground_owl.h"

namespace lli::cli {

namespace {

// model_type of <dir>/config.json ("" when unreadable).
std::string model_type_of(const fs::path& dir) {
  try {
    return models::read_json_file(dir / "config.json").value("model_type", std::string());
  } catch (const Error&) {
    return "";
  }
}

bool is_grounder_kind(const std::string& k) { return k == "owlv2" || k == "owlvit" || k == "llava"; }

}  // namespace

void add_grounding_flags(CLI::App& app, GroundingOptions& g) {
  app.add_option("--grounder", g.grounder,
                 "Text grounder: owlv2 | owlvit (open-vocabulary detectors) | llava (the chat model answers "
                 "with a box; handles referring expressions). Default: the installed OWL model (owlv2 first)");
  app.add_option("--grounder-model", g.grounder_model,
                 "Grounder checkpoint: a directory or a models.yaml name (default: tools.<tool>.grounder_model, "
                 "else the first installed owlv2 / owlvit entry, then lli's shapes-world demo-owl; tools.lli-chat.model "
                 "for llava)");
  app.add_option("--box-threshold", g.box_threshold,
                 "owl: keep detections whose score (sigmoid of the logit) exceeds this")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_flag("--all-instances", g.all_instances,
               "Every detection of a phrase above --box-threshold (after NMS), not only its best one");
  app.add_option("--nms", g.nms, "--all-instances: drop a box overlapping a better one by more than this IoU")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
}

nlohmann::json GroundedBox::to_json() const {
  nlohmann::json j = {{"phrase", phrase_text},
                      {"phrase_index", phrase},
                      {"box", {x0, y0, x1, y1}},
                      {"score", score ? nlohmann::json(*score) : nlohmann::json(nullptr)}};
  if (box_index >= 0) j["box_index"] = box_index;
  if (!answer.empty()) j["answer"] = answer;
  return j;
}

struct TextGrounder::Impl {
  std::string kind, model_name;
  GroundingOptions g;
  std::unique_ptr<pipelines::OwlDetector> owl;
  std::unique_ptr<pipelines::ChatSession> chat;
};

TextGrounder::TextGrounder(const CommonOptions& o, const GroundingOptions& g, const std::string& tool)
    : impl_(std::make_unique<Impl>()) {
  impl_->g = g;
  if (!g.grounder.empty() && !is_grounder_kind(g.grounder))
    throw UsageError("--grounder '" + g.grounder + "': expected owlv2, owlvit or llava");
  const Registry& reg = registry(o);
  std::string name = g.grounder_model;
  if (name.empty()) name = reg.tool_string(tool, "grounder_model", "");
  if (name.empty() && g.grounder == "llava") name = reg.tool_string("lli-chat", "model", "");
  if (name.empty()) {
    std::string missing;
    for (const char* kind : {"owlv2", "owlvit"}) {
      if (!g.grounder.empty() && g.grounder != kind) continue;
      for (const auto& [n, e] : reg.models()) {
        if (e.kind != kind || n.rfind("demo-", 0) == 0) continue;  // demo models only when nothing else is installed
        std::error_code ec;
        const fs::path dir = expand_path(e.path);
        if (fs::is_directory(dir, ec)) {
          name = n;
          break;
        }
        if (missing.empty()) missing = n;
      }
      if (!name.empty()) break;
    }
    if (name.empty() && g.grounder != "llava") {
      for (const char* kind : {"owlv2", "owlvit"}) {
        if (!g.grounder.empty() && g.grounder != kind) continue;
        if (const auto demo = reg.installed_demo(kind)) {
          log_info("{}: no OWL grounder installed{}; using the demo model '{}' (it knows only lli's synthetic shapes "
                   "world: {})",
                   tool, missing.empty() ? "" : " ('" + missing + "' is not)", demo->name,
                   (demo->dir / "MODEL_CARD.md").string());
          name = demo->name;
          break;
        }
      }
    }
    if (name.empty()) {
      if (!missing.empty()) (void)reg.resolve_model(missing);  // throws with where to fetch it
      throw ModelError("no text grounder installed: pass --grounder-model DIR (an OWLv2 / OWL-ViT checkpoint, or a "
                       "LLaVA one with --grounder llava) or add one to models.yaml (see README, 'Text prompts')");
    }
  }
  ResolvedModel rm = reg.resolve_model(name);
  std::string kind = rm.kind;
  if (!is_grounder_kind(kind)) kind = model_type_of(rm.dir);
  if (kind == "llava" || kind == "llava_next") kind = "llava";
  if (!is_grounder_kind(kind))
    throw ModelError(rm.dir.string() + ": not a text grounder (config.json model_type '" + model_type_of(rm.dir) +
                     "'; expected owlv2, owlvit or llava)");
  if (!g.grounder.empty() && g.grounder != kind)
    throw UsageError("--grounder " + g.grounder + " but " + rm.name + " is a " + kind + " checkpoint");
  impl_->kind = kind;
  impl_->model_name = rm.name;

  const double t0 = now_ms();
  Activity loading("loading the grounder " + rm.name);
  if (kind == "llava") {
    pipelines::ChatOptions co;
    co.device = parse_device(o.device);
    co.dtype = parse_dtype(o.dtype);
    co.image_aspect = pipelines::ChatImageAspect::pad;  // LLaVA-1.5's boxes refer to the padded square
    impl_->chat = std::make_unique<pipelines::ChatSession>(pipelines::ChatSession::load(rm.dir, co));
    log_info("{}: grounder llava {} loaded in {:.0f} ms", tool, rm.name, now_ms() - t0);
  } else {
    pipelines::OwlOptions oo;
    oo.device = parse_device(o.device);
    oo.dtype = parse_dtype(o.dtype);
    impl_->owl = std::make_unique<pipelines::OwlDetector>(rm.dir, oo);
    log_info("{}: grounder {} loaded in {:.0f} ms ({})", tool, rm.name, now_ms() - t0, impl_->owl->describe());
  }
}

TextGrounder::~TextGrounder() = default;
const std::string& TextGrounder::kind() const { return impl_->kind; }
const std::string& TextGrounder::model_name() const { return impl_->model_name; }

GroundingRun TextGrounder::run(const cv::Mat& bgr, const std::vector<std::string>& phrases, Session* session,
                               const std::string& image_sha) const {
  GroundingRun out;
  if (phrases.empty()) throw UsageError("no text to ground");
  const auto& g = impl_->g;
  if (impl_->chat) {
    const double t0 = now_ms();
    for (std::size_t i = 0; i < phrases.size(); ++i) {
      Activity asking("asking " + impl_->model_name + " where \"" + phrases[i].substr(0, 40) + "\" is");
      auto r = pipelines::ground_with_llava(*impl_->chat, bgr, phrases[i]);
      GroundedBox b;
      b.phrase = static_cast<int>(i);
      b.phrase_text = phrases[i];
      b.x0 = r.box.x0;
      b.y0 = r.box.y0;
      b.x1 = r.box.x1;
      b.y1 = r.box.y1;
      b.answer = r.answer;
      out.selected.push_back(b);
      out.detections.push_back(b);
      out.best.push_back(b);
      check_interrupted();
    }
    out.timings["grounder_ms"] = now_ms() - t0;
    return out;
  }

  const auto& owl = *impl_->owl;
  const std::string key = std::string("owl-") + owl.variant() + "-" + owl.fingerprint().substr(0, 16);
  pipelines::OwlImageFeatures feats;
  if (session && !image_sha.empty()) {
    if (auto file = session->find_cache(image_sha, key)) {
      try {
        feats = owl.features_from_bytes(read_file(file->string()), file->string());
        out.timings["image_features"] = "cached";
        log_info("grounder: image features from the session cache ({})", file->filename().string());
      } catch (const InputError& err) {
        log_info("grounder: ignoring unusable cached image features: {}", err.what());
      }
    }
  }
  if (feats.empty()) {
    Activity encoding(fmt::format("computing {} image features of a {}x{} image", owl.variant(), bgr.cols, bgr.rows));
    feats = owl.image_features(bgr);
    out.timings["image_features"] = "computed";
    out.timings["preprocess_ms"] = owl.timings().preprocess_ms;
    out.timings["vision_ms"] = owl.timings().vision_ms;
    out.timings["heads_ms"] = owl.timings().heads_ms;
    if (session && !image_sha.empty()) session->put_cache_bytes(image_sha, key, owl.features_to_bytes(feats), "safetensors");
  }
  check_interrupted();
  auto r = owl.query(feats, phrases);
  out.timings["text_ms"] = owl.timings().text_ms;
  out.timings["logits_ms"] = owl.timings().logits_ms;
  auto to_box = [&](const pipelines::OwlDetection& d) {
    GroundedBox b;
    b.phrase = d.phrase;
    b.phrase_text = phrases[static_cast<std::size_t>(d.phrase)];
    b.score = d.score;
    b.x0 = d.box.x0;
    b.y0 = d.box.y0;
    b.x1 = d.box.x1;
    b.y1 = d.box.y1;
    b.box_index = d.box_index;
    return b;
  };
  for (const auto& d : pipelines::owl_post_process(r, g.box_threshold)) out.detections.push_back(to_box(d));
  for (int q = 0; q < r.num_phrases; ++q) {
    const auto best = pipelines::owl_best_for_phrase(r, q);
    out.best.push_back(to_box(best));
    if (g.all_instances) {
      for (const auto& d : pipelines::owl_instances_for_phrase(r, q, g.box_threshold, g.nms)) out.selected.push_back(to_box(d));
    } else if (best.score > g.box_threshold) {
      out.selected.push_back(to_box(best));
    }
  }
  return out;
}

}  // namespace lli::cli
