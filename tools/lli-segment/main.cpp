// lli-segment: masks from strokes, points and boxes.
// Backends: sam (Segment Anything, HF SamModel checkpoints) and grabcut (classical, OpenCV).
#include <nlohmann/json.hpp>

#include <memory>

#include "common/batch.h"
#include "common/cli.h"
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
Prompt file: {"strokes":[{"points":[[x,y],...],"width":8,"label":"positive"}],
              "points":[{"x":10,"y":20,"label":"negative"}], "boxes":[{"box":[x0,y0,x1,y1]}]}
Strokes become point prompts for SAM: one every max(8, width) px along the line, at most 32 per
stroke and 64 in all (evenly subsampled); --stroke-mask also rasterises them into SAM's dense mask
prompt. Backend: sam when -m is given (or tools.lli-segment.backend in models.yaml), else grabcut.
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
};

struct MaskOut {
  cv::Mat mask;
  nlohmann::json info;  // score, stability, area, bbox, phrase
};

struct SegmentRun {
  std::vector<MaskOut> masks;
  nlohmann::json timings = nlohmann::json::object();
};

nlohmann::json bbox_json(const cv::Rect& r) {
  if (r.area() == 0) return nullptr;
  return nlohmann::json::array({r.x, r.y, r.x + r.width, r.y + r.height});
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

SegmentRun run_grabcut_backend(const cv::Mat& bgr, const Prompt& prompt, const SegmentOptions& so) {
  GrabCutOptions go;
  go.iterations = so.iterations;
  go.max_side = so.max_side;
  const double t0 = now_ms();
  GrabCutResult r = run_grabcut(bgr, to_seeds(prompt), go);
  SegmentRun run;
  run.timings["segment_ms"] = now_ms() - t0;
  run.masks.push_back({r.mask,
                       {{"score", nullptr}, {"stability", nullptr}, {"area", r.area}, {"bbox", bbox_json(r.bbox)},
                        {"phrase", prompt.boxes.empty() ? "" : prompt.boxes[0].phrase}}});
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
                 const std::string& image_sha) const {
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
      out.masks.push_back({m.mask,
                           {{"score", m.score}, {"stability", m.stability}, {"area", m.area}, {"bbox", bbox_json(m.bbox)},
                            {"phrase", phrase}, {"prompt_index", m.prompt_index}, {"mask_token", m.mask_token}}});
    }
    return out;
  }
};

cv::Mat union_of(const std::vector<MaskOut>& masks, cv::Size size) {
  cv::Mat u = cv::Mat::zeros(size, CV_8UC1);
  for (const auto& m : masks) cv::bitwise_or(u, m.mask, u);
  return u;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lli-segment: masks from strokes, points and boxes (Segment Anything; GrabCut)"};
  app.footer(kExamples);
  CommonOptions o;
  PromptOptions po;
  SegmentOptions so;
  add_common_flags(app, o);
  add_prompt_flags(app, po, /*with_text=*/true);
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
    const bool sam = so.backend == "sam";
    apply_runtime_options(o, /*uses_torch=*/sam);
    (void)pipelines::parse_sam_multimask(so.multimask);
    if (so.everything && !sam) throw UsageError("--everything needs the sam backend");
    if (!so.everything && !has_prompt(po))
      throw UsageError("nothing to segment: give --prompt FILE or --point/--box/--stroke (or --everything with sam)");

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
      if (!so.everything && prompt.no_geometry())
        throw UsageError("nothing to segment: the prompt has no strokes, points or boxes" +
                         std::string(prompt.text.empty() ? "" : " (text prompts need a text-grounded backend)"));
      Activity segmenting(fmt::format("segmenting a {}x{} image", bgr.cols, bgr.rows));
      SegmentRun r = sam ? sb.run(bgr, prompt, so, session, sha) : run_grabcut_backend(bgr, prompt, so);
      if (r.masks.empty()) log_info("lli-segment: no mask passed the filters");
      return r;
    };

    if (is_batch_input(o.image)) {
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
            write_mask(item.output.string(), n == 1 ? r.masks[0].mask : union_of(r.masks, img.bgr.size()));
            if (!so.overlay.empty())
              write_image((fs::path(so.overlay) / (item.stem + ".overlay.png")).string(),
                          make_overlay(img.bgr, union_of(r.masks, img.bgr.size())));
            result["masks"] = list;
            result["timings"] = r.timings;
          });
      if (rc) throw Error(static_cast<ExitCode>(rc), "some batch items failed (see above)");
      return;
    }

    SessionContext sc(o, "lli-segment");
    if (!sc.active() && o.output.empty() && !o.json)
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
        if (!m["score"].is_null()) nm.score = m["score"].get<double>();
        nm.label = m.value("phrase", std::string());
        session_masks.push_back(std::move(nm));
      }
      list.push_back(m);
    }
    if (!so.overlay.empty()) write_image(so.overlay, make_overlay(img.bgr, union_of(r.masks, img.bgr.size())));
    if (sc.active()) {
      sc.get().set_masks(sc.input_step(), session_masks);
      const auto& stored = sc.get().latest_masks();
      for (size_t k = 0; k < list.size() && k < stored.size(); ++k)
        if (!list[k].contains("path")) list[k]["path"] = sc.get().mask_path(stored[k]).string();
      sc.save();
    }
    nlohmann::json result = {{"image", input}, {"masks", list}, {"timings", r.timings}, {"backend", so.backend}};
    if (sam) result["model"] = sb.model_name;
    if (sc.active()) result["step"] = sc.input_step();
    std::string human;
    if (o.output != "-")
      for (const auto& m : list)
        human += fmt::format("{}mask: {} (area {} px, bbox {}{})", human.empty() ? "" : "\n",
                             m.value("path", std::string("-")), m["area"].get<long>(), m["bbox"].dump(),
                             m["score"].is_null() ? "" : fmt::format(", score {:.3f}", m["score"].get<double>()));
    emit_result(o, result, human);
  });
}
