// lli-segment: masks from strokes, points and boxes.
// Backends: grabcut (classical, OpenCV) now; sam (Segment Anything) when its model lands.
#include <nlohmann/json.hpp>

#include "common/batch.h"
#include "common/cli.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/grabcut.h"
#include "lli/image.h"
#include "lli/log.h"

using namespace lli;
using namespace lli::cli;

namespace {

const char* kExamples = R"(
Examples:
  lli-segment -i photo.jpg --prompt strokes.json -o mask.png --overlay vis.png
  lli-segment -i messi5.jpg --box 450,360,530,440 --stroke "480,400 500,405" -o ball.png --json
  lli-segment -i photo.jpg --point 120,80 --point 10,10,neg -o - | lli-edit remove -i photo.jpg --mask - -o out.png
  lli-segment --session s.json --prompt p.json            # segment the session's current image
  lli-segment -i photos/ --prompt p.json --outdir masks/  # batch: masks/<stem>.mask.png
Prompt file: {"strokes":[{"points":[[x,y],...],"width":8,"label":"positive"}],
              "points":[{"x":10,"y":20,"label":"negative"}], "boxes":[{"box":[x0,y0,x1,y1]}]}
Exit codes: 0 ok, 2 usage, 3 bad input, 4 model/backend, 5 runtime, 130 interrupted.)";

struct SegmentOptions {
  std::string backend;
  std::string overlay;
  int iterations = 5;
  int max_side = 1024;
};

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

nlohmann::json bbox_json(const cv::Rect& r) {
  if (r.area() == 0) return nullptr;
  return nlohmann::json::array({r.x, r.y, r.x + r.width, r.y + r.height});
}

struct SegmentResult {
  cv::Mat mask;
  nlohmann::json info;
};

SegmentResult segment_image(const cv::Mat& bgr, const Prompt& prompt, const SegmentOptions& so) {
  if (prompt.no_geometry())
    throw UsageError("nothing to segment: give --prompt FILE or --point/--box/--stroke" +
                     std::string(prompt.text.empty() ? "" : " (text prompts need a text-grounded backend)"));
  GrabCutOptions go;
  go.iterations = so.iterations;
  go.max_side = so.max_side;
  const double t0 = now_ms();
  GrabCutResult r = run_grabcut(bgr, to_seeds(prompt), go);
  const double ms = now_ms() - t0;
  nlohmann::json m = {{"score", nullptr}, {"stability", nullptr}, {"area", r.area}, {"bbox", bbox_json(r.bbox)},
                      {"phrase", prompt.boxes.empty() ? "" : prompt.boxes[0].phrase}};
  return {r.mask, {{"mask", m}, {"timings", {{"segment_ms", ms}}}, {"backend", "grabcut"},
                   {"image_size", {bgr.cols, bgr.rows}}}};
}

void check_backend(const std::string& backend) {
  if (backend == "grabcut") return;
  if (backend == "sam")
    no_backend("--backend sam", "Segment Anything support lands with its model; use --backend grabcut meanwhile");
  throw UsageError("--backend '" + backend + "': expected grabcut or sam");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lli-segment: masks from strokes, points and boxes (GrabCut; Segment Anything)"};
  app.footer(kExamples);
  CommonOptions o;
  PromptOptions po;
  SegmentOptions so;
  add_common_flags(app, o);
  add_prompt_flags(app, po, /*with_text=*/true);
  app.add_option("--backend", so.backend, "grabcut | sam (default from models.yaml: tools.lli-segment.backend)");
  app.add_option("--overlay", so.overlay, "Also write a visualisation PNG (batch mode: a directory)");
  app.add_option("--iterations", so.iterations, "GrabCut iterations")->capture_default_str()->check(CLI::Range(1, 100));
  app.add_option("--max-side", so.max_side, "GrabCut works on a copy downscaled to this longest side (0 = never)")
      ->capture_default_str();

  return run_tool("lli-segment", app, argc, argv, o, [&] {
    apply_runtime_options(o, /*uses_torch=*/false);
    if (so.backend.empty()) so.backend = registry(o).tool_string("lli-segment", "backend", "grabcut");
    check_backend(so.backend);

    if (is_batch_input(o.image)) {
      std::error_code ec;
      const bool prompt_dir = !po.prompt_file.empty() && fs::is_directory(po.prompt_file, ec);
      if (!has_prompt(po)) throw UsageError("batch mode needs --prompt FILE|DIR or --point/--box/--stroke");
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
            Prompt prompt = build_prompt(pi, img.bgr.cols, img.bgr.rows, pfile);
            SegmentResult r = segment_image(img.bgr, prompt, so);
            write_mask(item.output.string(), r.mask);
            if (!so.overlay.empty())
              write_image((fs::path(so.overlay) / (item.stem + ".overlay.png")).string(), make_overlay(img.bgr, r.mask));
            result["masks"] = nlohmann::json::array({r.info["mask"]});
            result["masks"][0]["path"] = item.output.string();
            result["timings"] = r.info["timings"];
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
    Prompt prompt = build_prompt(po, img.bgr.cols, img.bgr.rows);
    check_not_overwriting(o.output, {input}, false);
    check_not_overwriting(so.overlay, {input}, false);
    log_info("lli-segment: {} ({}x{}), backend {}", input, img.bgr.cols, img.bgr.rows, so.backend);

    SegmentResult r = segment_image(img.bgr, prompt, so);
    check_interrupted();
    nlohmann::json mask = r.info["mask"];
    const std::string mask_bytes = encode_image(r.mask, ".png");
    if (!o.output.empty()) {
      write_file_atomic(o.output, out_ext == ".png" ? mask_bytes : encode_image(r.mask, out_ext));
      mask["path"] = o.output == "-" ? "<stdout>" : o.output;
    }
    if (!so.overlay.empty()) write_image(so.overlay, make_overlay(img.bgr, r.mask));
    if (sc.active()) {
      NewMask nm;
      nm.bytes = mask_bytes;
      nm.tool = "lli-segment";
      nm.params = {{"backend", so.backend}, {"prompt", nlohmann::json::parse(prompt_to_json(prompt))}};
      nm.label = prompt.boxes.empty() ? prompt.text : prompt.boxes[0].phrase;
      sc.get().set_masks(sc.input_step(), {nm});
      if (mask["path"].is_null() || !mask.contains("path"))
        mask["path"] = sc.get().mask_path(sc.get().latest_masks().back()).string();
      sc.save();
    }
    nlohmann::json result = {{"image", input}, {"masks", nlohmann::json::array({mask})}, {"timings", r.info["timings"]},
                             {"backend", so.backend}};
    if (sc.active()) result["step"] = sc.input_step();
    const std::string human = o.output == "-" ? "" :
        fmt::format("mask: {} (area {} px, bbox {})", mask.value("path", std::string("-")), mask["area"].get<long>(),
                    mask["bbox"].dump());
    emit_result(o, result, human);
  });
}
