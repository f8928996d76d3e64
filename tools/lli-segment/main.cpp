// lli-segment: masks from strokes, points, boxes and named text.
// Backends: sam (Segment Anything, HF SamModel checkpoints) and grabcut (classical, OpenCV); text
// is grounded into boxes first (OWLv2 / OWL-ViT detectors or LLaVA, common/grounding.h).
#include <nlohmann/json.hpp>

#include <opencv2/imgproc.hpp>

#include <memory>
#include <optional>

#include "common/batch.h"
#include "common/cli.h"
#include "common/grounding.h"
#include "core/activity.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/grabcut.h"
#include "lli/image.h"
#include "lli/log.h"
#include "pipelines/segment_sam.h"

using namespace lli;
using namespace lli::cli;
using lli::pipelines::SamSegmenter;

namespace {

const char* kExamples = R"(
Examples:
  lli-segment -m sam-vit-base -i photo.jpg --prompt strokes.json -o mask.png --overlay vis.png
  lli-segment -m sam-vit-base -i photo.jpg --box 10,10,200,150 --box 220,40,400,300 -o obj.png --json  # obj-0.png, obj-1.png
  lli-segment -m sam-vit-base -i photo.jpg --point 120,80 --multimask all -o cand.png             # 3 candidates
  lli-segment -m sam-vit-base -i photo.jpg --everything -o auto.png --json                        # automatic masks
  lli-segment --backend grabcut -i messi5.jpg --box 332,283,393,341 --stroke "350,312 375,312" -o ball.png
  lli-segment -i photo.jpg --point 120,80 -o - | lli-edit remove -i photo.jpg --mask - -o out.png
  lli-segment --session s.json --prompt p.json   # the session's current image; the SAM embedding is cached there
  lli-segment -i photos/ --prompt prompts/ --outdir masks/   # batch: masks/<stem>.mask.png, prompts/<stem>.json
Text (an open-vocabulary detector or LLaVA finds the box, SAM or GrabCut the mask):
  lli-segment -m sam-vit-base -i photo.jpg --text "the ball" -o ball.png --json
  lli-segment -i photo.jpg --text apple --text orange --all-instances -o fruit.png   # fruit-0.png ...
  lli-segment -i photo.jpg --text "the man on the left" --grounder llava -o man.png
  lli-segment -i photo.jpg --text "the ball" --session - | lli-edit remove --session - -o clean.png
  lli-segment --grounder-model owlv2-dir -i photo.jpg --text ball --detections-only --json --box-threshold 0
Prompt file: {"strokes":[{"points":[[x,y],...],"width":8,"label":"positive"}],
              "points":[{"x":10,"y":20,"label":"negative"}], "boxes":[{"box":[x0,y0,x1,y1]}],
              "text":"the ball"}
One mask per phrase (its best detection above --box-threshold), or one per detection with
--all-instances; points and strokes given with text are added to every grounded box. No detection:
exit 0 with no mask and a note on stderr, or exit 3 with --require-match.
Strokes become point prompts for SAM: one every max(8, width) px along the line, at most 32 per
stroke and 64 in all (evenly subsampled); --stroke-mask also rasterises them into SAM's dense mask
prompt. Backend: sam when -m is given (or tools.lli-segment.backend in models.yaml), else grabcut;
--backend sam without -m uses models.yaml's model, or lli's shapes-world demo-sam when that is not
installed; --text without an installed OWL detector uses lli's shapes-world demo-owl.
Exit codes: 0 ok, 2 usage, 3 bad input, 4 model/backend, 5 runtime, 130 interrupted.)";

struct SegmentOptions {
  std::string backend;
  std::string overlay;
  int iterations = 5;
  int max_side = 1024;
  std::string multimask = "best";
  bool everything = false;
  int points_per_side = 32;
  bool stroke_mask = false;
  std::vector<std::string> texts;
  bool detections_only = false;
  bool require_match = false;
  GroundingOptions grounding;
};

struct MaskOut {
  cv::Mat mask;
  nlohmann::json info;  // score, stability, area, bbox, phrase
};

struct SegmentRun {
  std::vector<MaskOut> masks;
  nlohmann::json timings = nlohmann::json::object();
  std::optional<GroundingRun> grounding;  // when text was grounded
  std::vector<std::string> unmatched;     // phrases without a detection above the threshold
};

nlohmann::json bbox_json(const cv::Rect& r) {
  if (r.area() == 0) return nullptr;
  return nlohmann::json::array({r.x, r.y, r.x + r.width, r.y + r.height});
}

// The grounder's view of a mask: its score (owl) and box (original pixels).
void add_grounding(nlohmann::json& info, const GroundedBox& b) {
  info["grounder_score"] = b.score ? nlohmann::json(*b.score) : nlohmann::json(nullptr);
  info["grounder_box"] = {b.x0, b.y0, b.x1, b.y1};
  if (!b.answer.empty()) info["grounder_answer"] = b.answer;
}

// ---- grabcut ----------------------------------------------------------------------------------
GrabCutSeeds to_seeds(const Prompt& p) {
  GrabCutSeeds s;
  for (const auto& st : p.strokes) {
    GrabCutStroke g;
    for (const auto& xy : st.points) g.points.emplace_back(xy.x, xy.y);
    g.width = st.width;
    g.positive = st.positive;
    s.strokes.push_back(std::move(g));
  }
  for (const auto& pt : p.points) s.points.push_back({cv::Point2d(pt.x, pt.y), pt.positive});
  if (p.boxes.size() > 1)
    throw InputError(p.source + ": the grabcut backend takes at most one box (got " + std::to_string(p.boxes.size()) +
                     "); the sam backend gives one mask per box");
  if (!p.boxes.empty()) {
    const auto& b = p.boxes[0];
    s.box = cv::Rect2d(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0);
  }
  return s;
}

SegmentRun run_grabcut_backend(const cv::Mat& bgr, const Prompt& prompt, const SegmentOptions& so,
                               const std::vector<GroundedBox>& grounded = {}) {
  GrabCutOptions go;
  go.iterations = so.iterations;
  go.max_side = so.max_side;
  const double t0 = now_ms();
  SegmentRun run;
  if (grounded.empty()) {
    GrabCutResult r = run_grabcut(bgr, to_seeds(prompt), go);
    run.masks.push_back({r.mask,
                         {{"score", nullptr}, {"stability", nullptr}, {"area", r.area}, {"bbox", bbox_json(r.bbox)},
                          {"phrase", prompt.boxes.empty() ? "" : prompt.boxes[0].phrase}}});
  } else {
    // One GrabCut run per grounded box (clipped to the image), the prompt's strokes/points as seeds.
    Prompt seeds_only = prompt;
    seeds_only.boxes.clear();
    for (const auto& b : grounded) {
      GrabCutSeeds s = to_seeds(seeds_only);
      const double x0 = std::clamp(b.x0, 0.0, double(bgr.cols)), y0 = std::clamp(b.y0, 0.0, double(bgr.rows));
      const double x1 = std::clamp(b.x1, 0.0, double(bgr.cols)), y1 = std::clamp(b.y1, 0.0, double(bgr.rows));
      s.box = cv::Rect2d(x0, y0, std::max(1.0, x1 - x0), std::max(1.0, y1 - y0));
      GrabCutResult r = run_grabcut(bgr, s, go);
      run.masks.push_back({r.mask,
                           {{"score", nullptr}, {"stability", nullptr}, {"area", r.area}, {"bbox", bbox_json(r.bbox)},
                            {"phrase", b.phrase_text}}});
      add_grounding(run.masks.back().info, b);
      check_interrupted();
    }
  }
  run.timings["segment_ms"] = now_ms() - t0;
  return run;
}

// ---- sam --------------------------------------------------------------------------------------
struct SamBackend {
  std::unique_ptr<SamSegmenter> seg;
  std::string model_name;

  // The image embedding: from the session cache when present (keyed by the image's sha256 and the
  // model's fingerprint), else computed (and stored in the cache when a session is given).
  pipelines::SamEmbedding embedding(const cv::Mat& bgr, Session* session, const std::string& image_sha,
                                    nlohmann::json& timings) const {
    const std::string key = "sam-" + seg->fingerprint().substr(0, 16);
    if (session && !image_sha.empty()) {
      if (auto file = session->find_cache(image_sha, key)) {
        try {
          auto e = seg->embedding_from_bytes(read_file(file->string()), file->string());
          timings["embedding"] = "cached";
          log_info("lli-segment: image embedding from the session cache ({})", file->filename().string());
          return e;
        } catch (const InputError& err) {
          log_info("lli-segment: ignoring an unusable cached embedding: {}", err.what());
        }
      }
    }
    auto e = seg->compute_embedding(bgr);
    timings["embedding"] = "computed";
    timings["preprocess_ms"] = seg->timings().preprocess_ms;
    timings["encoder_ms"] = seg->timings().encoder_ms;
    if (session && !image_sha.empty()) session->put_cache_bytes(image_sha, key, seg->embedding_to_bytes(e), "safetensors");
    return e;
  }

  SegmentRun run(const cv::Mat& bgr, const Prompt& prompt, const SegmentOptions& so, Session* session,
                 const std::string& image_sha, const std::vector<GroundedBox>& grounded = {}) const {
    SegmentRun out;
    const double t0 = now_ms();
    auto emb = embedding(bgr, session, image_sha, out.timings);
    check_interrupted();
    std::vector<pipelines::SamMask> masks;
    if (so.everything) {
      pipelines::SamEverythingOptions eo;
      eo.points_per_side = so.points_per_side;
      masks = seg->everything(emb, eo);
    } else {
      pipelines::SamPrompt sp = pipelines::sam_prompt_from(prompt, pipelines::parse_sam_multimask(so.multimask));
      for (const auto& b : grounded) sp.boxes.push_back({b.x0, b.y0, b.x1, b.y1});
      if (so.stroke_mask && !prompt.strokes.empty()) sp.mask_prompt = seg->stroke_mask_prompt(emb, prompt.strokes);
      masks = seg->segment(emb, sp);
    }
    out.timings["decoder_ms"] = seg->timings().decoder_ms;
    out.timings["postprocess_ms"] = seg->timings().postprocess_ms;
    out.timings["total_ms"] = now_ms() - t0;
    for (const auto& m : masks) {
      std::string phrase;
      if (!so.everything && !prompt.boxes.empty() && m.prompt_index < static_cast<int>(prompt.boxes.size()))
        phrase = prompt.boxes[m.prompt_index].phrase;
      else if (!so.everything && m.prompt_index >= static_cast<int>(prompt.boxes.size()) &&
               m.prompt_index - static_cast<int>(prompt.boxes.size()) < static_cast<int>(grounded.size()))
        phrase = grounded[static_cast<std::size_t>(m.prompt_index) - prompt.boxes.size()].phrase_text;
      out.masks.push_back({m.mask,
                           {{"score", m.score}, {"stability", m.stability}, {"area", m.area}, {"bbox", bbox_json(m.bbox)},
                            {"phrase", phrase}, {"prompt_index", m.prompt_index}, {"mask_token", m.mask_token}}});
      const int gi = m.prompt_index - static_cast<int>(prompt.boxes.size());
      if (!so.everything && gi >= 0 && gi < static_cast<int>(grounded.size())) add_grounding(out.masks.back().info, grounded[gi]);
    }
    return out;
  }
};

cv::Mat union_of(const std::vector<MaskOut>& masks, cv::Size size) {
  cv::Mat u = cv::Mat::zeros(size, CV_8UC1);
  for (const auto& m : masks) cv::bitwise_or(u, m.mask, u);
  return u;
}

// The overlay of every mask, each labelled with its phrase (when it has one) at its box.
cv::Mat labelled_overlay(const cv::Mat& bgr, const std::vector<MaskOut>& masks) {
  cv::Mat vis = make_overlay(bgr, union_of(masks, bgr.size()));
  const double scale = std::max(0.4, std::min(bgr.cols, bgr.rows) / 800.0);
  const int thick = std::max(1, static_cast<int>(scale * 2));
  for (const auto& m : masks) {
    const std::string phrase = m.info.value("phrase", std::string());
    const auto& bb = m.info.value("bbox", nlohmann::json());
    if (phrase.empty() || !bb.is_array() || bb.size() != 4) continue;
    int base = 0;
    const std::string label = phrase.size() > 40 ? phrase.substr(0, 37) + "..." : phrase;
    const cv::Size ts = cv::getTextSize(label, cv::FONT_HERSHEY_SIMPLEX, scale, thick, &base);
    const int x = std::clamp(bb[0].get<int>(), 0, std::max(0, bgr.cols - ts.width));
    const int y = std::clamp(bb[1].get<int>() - 4, ts.height + 2, bgr.rows - 2);
    cv::rectangle(vis, cv::Point(x, y - ts.height - 2), cv::Point(x + ts.width, y + base), cv::Scalar(0, 0, 0), cv::FILLED);
    cv::putText(vis, label, cv::Point(x, y), cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(255, 255, 255), thick, cv::LINE_AA);
  }
  return vis;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lli-segment: masks from strokes, points, boxes and named text (Segment Anything; GrabCut; OWLv2 / "
               "OWL-ViT / LLaVA grounding)"};
  app.footer(kExamples);
  CommonOptions o;
  PromptOptions po;
  SegmentOptions so;
  add_common_flags(app, o);
  add_prompt_flags(app, po, /*with_text=*/false);
  app.add_option("--text", so.texts, "Segment what this names (repeatable: one mask per phrase); prompt files' \"text\" adds one")
      ->allow_extra_args(false);
  add_grounding_flags(app, so.grounding);
  app.add_flag("--detections-only", so.detections_only,
               "Print the grounder's detections (original pixels, scores, phrase index; the reference's "
               "post-processing at --box-threshold) and stop: no masks");
  app.add_flag("--require-match", so.require_match, "Exit 3 when a phrase has no detection above --box-threshold");
  app.add_option("--backend", so.backend, "sam | grabcut (default: sam with -m, else models.yaml tools.lli-segment.backend)");
  app.add_option("--overlay", so.overlay, "Also write a visualisation PNG (batch mode: a directory)");
  app.add_option("--multimask", so.multimask,
                 "sam: best (3 candidates, highest predicted IoU kept), off (single-mask output), all (3 files)")
      ->capture_default_str();
  app.add_flag("--everything", so.everything, "sam: automatic masks from a grid of point prompts (no prompt needed)");
  app.add_option("--points-per-side", so.points_per_side, "sam --everything: grid size")->capture_default_str();
  app.add_flag("--stroke-mask", so.stroke_mask, "sam: also rasterise strokes into the dense mask prompt");
  app.add_option("--iterations", so.iterations, "grabcut: iterations")->capture_default_str()->check(CLI::Range(1, 100));
  app.add_option("--max-side", so.max_side, "grabcut: work on a copy downscaled to this longest side (0 = never)")
      ->capture_default_str();

  return run_tool("lli-segment", app, argc, argv, o, [&] {
    if (so.backend.empty())
      so.backend = !o.model.empty() ? "sam" : registry(o).tool_string("lli-segment", "backend", "grabcut");
    if (so.backend != "sam" && so.backend != "grabcut")
      throw UsageError("--backend '" + so.backend + "': expected sam or grabcut");
    for (const auto& t : so.texts)
      if (t.find_first_not_of(" \t\r\n") == std::string::npos) throw UsageError("--text: an empty phrase");
    const bool text = !so.texts.empty();
    if (so.detections_only && !text && po.prompt_file.empty())
      throw UsageError("--detections-only needs --text (or a prompt file with \"text\")");
    if (so.detections_only && (so.everything || !so.overlay.empty() || !o.output.empty()))
      throw UsageError("--detections-only prints detections; it takes no --everything, --overlay or -o");
    const bool sam = so.backend == "sam" && !so.detections_only;
    apply_runtime_options(o, /*uses_torch=*/sam || text || !po.prompt_file.empty());
    (void)pipelines::parse_sam_multimask(so.multimask);
    if (so.everything && !sam) throw UsageError("--everything needs the sam backend");
    if (so.everything && text) throw UsageError("--everything and --text exclude each other");
    if (!so.everything && !has_prompt(po) && !text)
      throw UsageError("nothing to segment: give --text, --prompt FILE or --point/--box/--stroke (or --everything with sam)");

    // The grounder is loaded on first use (a prompt file may or may not carry text).
    std::unique_ptr<TextGrounder> grounder;
    auto get_grounder = [&]() -> const TextGrounder& {
      if (!grounder) grounder = std::make_unique<TextGrounder>(o, so.grounding, "lli-segment");
      return *grounder;
    };

    SamBackend sb;
    if (sam) {
      ResolvedModel m = require_model(o, "lli-segment");
      pipelines::SamOptions opts;
      opts.device = parse_device(o.device);
      opts.dtype = parse_dtype(o.dtype);
      const double t0 = now_ms();
      Activity loading("loading the model " + m.name);
      sb.seg = std::make_unique<SamSegmenter>(m.dir, opts);
      sb.model_name = m.name;
      log_info("lli-segment: loaded {} in {:.0f} ms ({})", m.name, now_ms() - t0, sb.seg->describe());
    }
    auto segment = [&](const cv::Mat& bgr, const Prompt& prompt, Session* session, const std::string& sha) {
      std::vector<std::string> phrases = so.texts;
      if (!prompt.text.empty()) phrases.push_back(prompt.text);
      if (!so.everything && prompt.no_geometry() && phrases.empty())
        throw UsageError("nothing to segment: the prompt has no strokes, points, boxes or text");
      if (phrases.empty()) {
        if (so.detections_only) throw UsageError("--detections-only: the prompt has no text");
        Activity segmenting(fmt::format("segmenting a {}x{} image", bgr.cols, bgr.rows));
        SegmentRun r = sam ? sb.run(bgr, prompt, so, session, sha) : run_grabcut_backend(bgr, prompt, so);
        if (r.masks.empty()) log_info("lli-segment: no mask passed the filters");
        return r;
      }
      const TextGrounder& grounder_ref = get_grounder();  // loaded once, outside the timing
      const double t0 = now_ms();
      GroundingRun g = grounder_ref.run(bgr, phrases, session, sha);
      g.timings["grounding_ms"] = now_ms() - t0;
      std::vector<std::string> unmatched;
      for (std::size_t i = 0; i < phrases.size(); ++i) {
        bool found = false;
        for (const auto& b : g.selected) found = found || b.phrase == static_cast<int>(i);
        if (!found) unmatched.push_back(phrases[i]);
      }
      for (const auto& u : unmatched)
        log_info("lli-segment: no detection of \"{}\" above --box-threshold {}", u.substr(0, 60), so.grounding.box_threshold);
      if (so.require_match && !unmatched.empty())
        throw InputError("no detection of \"" + unmatched[0].substr(0, 60) + "\" above --box-threshold " +
                         fmt::format("{}", so.grounding.box_threshold) + " (--require-match)");
      SegmentRun r;
      if (!so.detections_only && (!g.selected.empty() || !prompt.boxes.empty())) {
        Activity segmenting(fmt::format("segmenting a {}x{} image", bgr.cols, bgr.rows));
        if (sam) {
          r = sb.run(bgr, prompt, so, session, sha, g.selected);
        } else {
          r = run_grabcut_backend(bgr, prompt, so, g.selected);
        }
      }
      r.timings["grounding"] = g.timings;
      r.grounding = std::move(g);
      r.unmatched = std::move(unmatched);
      return r;
    };
    auto grounding_json = [&](const SegmentRun& r, nlohmann::json& result) {
      if (!r.grounding) return;
      result["grounder"] = get_grounder().kind();
      result["grounder_model"] = get_grounder().model_name();
      result["box_threshold"] = so.grounding.box_threshold;
      nlohmann::json phrases = nlohmann::json::array(), dets = nlohmann::json::array(), best = nlohmann::json::array();
      for (const auto& b : r.grounding->best) phrases.push_back(b.phrase_text);
      for (const auto& b : r.grounding->detections) dets.push_back(b.to_json());
      for (const auto& b : r.grounding->best) best.push_back(b.to_json());
      result["phrases"] = phrases;
      result["unmatched"] = r.unmatched;
      if (so.detections_only) {
        result["detections"] = dets;
        result["best"] = best;
      }
    };

    if (is_batch_input(o.image)) {
      if (so.detections_only) throw UsageError("--detections-only takes one image (-i FILE), not a batch");
      std::error_code ec;
      const bool prompt_dir = !po.prompt_file.empty() && fs::is_directory(po.prompt_file, ec);
      if (!so.overlay.empty()) fs::create_directories(so.overlay, ec);
      int rc = run_batch(
          o, "lli-segment", [&](const fs::path& in) { return fs::path(o.outdir) / (in.stem().string() + ".mask.png"); },
          [&](const BatchItem& item, nlohmann::json& result) {
            Image img = read_image(item.input.string());
            std::string pfile;
            if (prompt_dir) {
              auto f = find_by_stem(po.prompt_file, item.stem, {""}, {".json"});
              if (!f) throw InputError(po.prompt_file + ": no " + item.stem + ".json for " + item.input.string());
              pfile = f->string();
            }
            PromptOptions pi = po;
            if (prompt_dir) pi.prompt_file.clear();
            Prompt prompt = so.everything && !has_prompt(pi) && pfile.empty()
                                ? Prompt{}
                                : build_prompt(pi, img.bgr.cols, img.bgr.rows, pfile);
            SegmentRun r = segment(img.bgr, prompt, nullptr, "");
            // Several masks: numbered files, then the union as the primary output, written last
            // so that it marks the item done for a resumed run.
            const size_t n = r.masks.size();
            nlohmann::json list = nlohmann::json::array();
            for (size_t k = 0; k < n; ++k) {
              nlohmann::json m = r.masks[k].info;
              m["path"] = n == 1 ? item.output.string() : numbered(item.output.string(), k, n);
              if (n > 1) write_mask(m["path"].get<std::string>(), r.masks[k].mask);
              list.push_back(m);
            }
            // No mask (text without a detection): an empty mask, so that the item counts as done.
            write_mask(item.output.string(), n == 1 ? r.masks[0].mask : union_of(r.masks, img.bgr.size()));
            if (!so.overlay.empty())
              write_image((fs::path(so.overlay) / (item.stem + ".overlay.png")).string(), labelled_overlay(img.bgr, r.masks));
            result["masks"] = list;
            result["timings"] = r.timings;
            grounding_json(r, result);
          });
      if (rc) throw Error(static_cast<ExitCode>(rc), "some batch items failed (see above)");
      return;
    }

    SessionContext sc(o, "lli-segment");
    if (!sc.active() && o.output.empty() && !o.json && !so.detections_only)
      throw UsageError("no output: pass -o mask.png (or -o - for stdout), --json, or --session");
    if (o.output == "-" && stdout_is_session(o)) throw UsageError("-o - and --session - both want stdout");
    if (o.output == "-" && o.json) throw UsageError("-o - writes the mask PNG to stdout; --json cannot share it");
    const std::string out_ext = o.output.empty() ? ".png" : output_image_ext(o.output);  // checked before any work
    if (!so.overlay.empty()) (void)output_image_ext(so.overlay);
    const std::string input = sc.input_image();
    Image img = read_image(input);
    Prompt prompt = so.everything && !has_prompt(po) ? Prompt{} : build_prompt(po, img.bgr.cols, img.bgr.rows);
    check_not_overwriting(o.output, {input}, false);
    check_not_overwriting(so.overlay, {input}, false);
    log_info("lli-segment: {} ({}x{}), backend {}", input, img.bgr.cols, img.bgr.rows, so.backend);

    const std::string sha = sc.active() ? sc.get().step(sc.input_step()).sha256 : "";
    SegmentRun r = segment(img.bgr, prompt, sc.active() ? &sc.get() : nullptr, sha);
    check_interrupted();
    if (o.output == "-" && r.masks.size() > 1)
      throw UsageError("-o - takes one mask but there are " + std::to_string(r.masks.size()) +
                       "; write them to files (-o mask.png gives mask-0.png, mask-1.png, ...)");

    nlohmann::json list = nlohmann::json::array();
    std::vector<NewMask> session_masks;
    for (size_t k = 0; k < r.masks.size(); ++k) {
      nlohmann::json m = r.masks[k].info;
      const std::string bytes = encode_image(r.masks[k].mask, ".png");
      if (!o.output.empty()) {
        const std::string path = o.output == "-" ? "-" : numbered(o.output, k, r.masks.size());
        write_file_atomic(path, out_ext == ".png" ? bytes : encode_image(r.masks[k].mask, out_ext));
        m["path"] = path == "-" ? "<stdout>" : path;
      }
      if (sc.active()) {
        NewMask nm;
        nm.bytes = bytes;
        nm.tool = "lli-segment";
        nm.params = {{"backend", so.backend}, {"prompt", nlohmann::json::parse(prompt_to_json(prompt))}};
        if (sam) nm.params["model"] = sb.model_name;
        if (r.grounding) {
          nm.params["text"] = m.value("phrase", std::string());
          nm.params["grounder"] = get_grounder().kind();
          nm.params["grounder_model"] = get_grounder().model_name();
          if (m.contains("grounder_box")) nm.params["grounder_box"] = m["grounder_box"];
        }
        if (!m["score"].is_null()) nm.score = m["score"].get<double>();
        nm.label = m.value("phrase", std::string());
        session_masks.push_back(std::move(nm));
      }
      list.push_back(m);
    }
    if (!so.overlay.empty()) write_image(so.overlay, labelled_overlay(img.bgr, r.masks));
    if (sc.active()) {
      if (!so.detections_only) sc.get().set_masks(sc.input_step(), session_masks);
      const auto& stored = sc.get().latest_masks();
      for (size_t k = 0; k < list.size() && k < stored.size(); ++k)
        if (!list[k].contains("path")) list[k]["path"] = sc.get().mask_path(stored[k]).string();
      sc.save();
    }
    nlohmann::json result = {{"image", input}, {"masks", list}, {"timings", r.timings}, {"backend", so.backend}};
    if (sam) result["model"] = sb.model_name;
    if (sc.active()) result["step"] = sc.input_step();
    grounding_json(r, result);
    std::string human;
    if (so.detections_only) {
      result.erase("masks");
      for (const auto& b : r.grounding->best)
        human += fmt::format("{}{}: best box [{:.1f}, {:.1f}, {:.1f}, {:.1f}]{}", human.empty() ? "" : "\n", b.phrase_text,
                             b.x0, b.y0, b.x1, b.y1, b.score ? fmt::format(", score {:.3f}", *b.score) : "");
      human += fmt::format("{}{} detection(s) above --box-threshold {}", human.empty() ? "" : "\n",
                           r.grounding->detections.size(), so.grounding.box_threshold);
    } else if (o.output != "-")
      for (const auto& m : list)
        human += fmt::format("{}mask: {} (area {} px, bbox {}{}{})", human.empty() ? "" : "\n",
                             m.value("path", std::string("-")), m["area"].get<long>(), m["bbox"].dump(),
                             m["score"].is_null() ? "" : fmt::format(", score {:.3f}", m["score"].get<double>()),
                             m.value("phrase", std::string()).empty() ? "" : ", \"" + m["phrase"].get<std::string>() + "\"");
    if (!so.detections_only && r.grounding && list.empty()) human = "no mask: nothing matched the text";
    emit_result(o, result, human);
  });
}
