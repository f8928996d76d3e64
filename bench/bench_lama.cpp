// LaMa CPU benchmark (lli-edit remove --backend lama's path through pipelines/inpaint_lama.h).
//
//   bench_lama DIR [--dtype f32|bf16] [--size 512] [--threads 2] [--repeat 3] [--profile]
//
// DIR: a LaMa model directory (make_random_lama makes one with big-lama's shapes). Measures the
// model load, then the full-size path on a SIZE x SIZE image with a centred rectangular hole: the
// first call and the median / minimum of the next R calls, split into the generator and the
// pre/post-processing; peak RSS. --profile: the operators of one extra call by total CPU time.
// Output: one "name: value unit" line per metric (scripts/bench_lama.sh).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_profile.h"
#include "bench_util.h"
#include "lli/device.h"
#include "lli/error.h"
#include "pipelines/inpaint_lama.h"

namespace {

using lli::bench::Clock;
using lli::bench::median;
using lli::bench::metric;
using lli::bench::ms_since;
using lli::bench::peak_rss_mib;

// A smooth synthetic photo (gradients + a few shapes) and a centred hole of a quarter of the area.
void make_inputs(int size, cv::Mat& bgr, cv::Mat& mask) {
  bgr.create(size, size, CV_8UC3);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x)
      bgr.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uchar>(255 * x / size), static_cast<uchar>(255 * y / size),
                                          static_cast<uchar>(128 + 100 * ((x / 32 + y / 32) % 2)));
  cv::circle(bgr, {size / 3, size / 3}, size / 8, cv::Scalar(30, 200, 60), cv::FILLED);
  mask = cv::Mat::zeros(size, size, CV_8UC1);
  mask(cv::Rect(size / 4, size / 4, size / 2, size / 2)).setTo(255);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"LaMa CPU benchmark"};
  std::string dir, dtype = "bf16";
  int size = 512, threads = 2, repeat = 3;
  bool profile = false;
  app.add_option("dir", dir, "LaMa model directory (generator.safetensors + config.yaml)")->required();
  app.add_option("--dtype", dtype, "convolution dtype: f32 or bf16");
  app.add_option("--size", size, "image side");
  app.add_option("--threads", threads, "intra-op threads");
  app.add_option("--repeat", repeat, "timed calls after the first");
  app.add_flag("--profile", profile, "operator profile of one extra call");
  CLI11_PARSE(app, argc, argv);
  try {
    lli::configure_threads(threads);
    lli::pipelines::LamaOptions o;
    o.dtype = lli::parse_dtype(dtype);
    o.max_side = 0;  // the full-size path at every size
    auto t0 = Clock::now();
    lli::pipelines::LamaInpainter lama(dir, o);
    metric("load_ms", ms_since(t0), "ms");
    std::printf("model: %s\n", lama.describe().c_str());
    cv::Mat bgr, mask;
    make_inputs(size, bgr, mask);
    t0 = Clock::now();
    cv::Mat out = lama.inpaint(bgr, mask);
    metric("first_ms", ms_since(t0), "ms");
    std::vector<double> total, model, other;
    for (int i = 0; i < repeat; ++i) {
      t0 = Clock::now();
      out = lama.inpaint(bgr, mask);
      total.push_back(ms_since(t0));
      const auto& t = lama.timings();
      model.push_back(t.model_ms);
      other.push_back(t.preprocess_ms + t.postprocess_ms);
    }
    const std::string p = "lama_" + dtype + "_" + std::to_string(size) + "_";
    metric(p + "model_median_ms", median(model), "ms");
    metric(p + "model_min_ms", model.empty() ? 0 : *std::min_element(model.begin(), model.end()), "ms");
    metric(p + "total_median_ms", median(total), "ms");
    metric(p + "pre_post_median_ms", median(other), "ms");
    metric(p + "peak_rss_mib", peak_rss_mib(), "MiB");
    lli::bench::allocator_metrics();
    if (profile) lli::bench::profile_ops("lama " + dtype, [&] { lama.inpaint(bgr, mask); });
  } catch (const lli::Error& e) {
    std::fprintf(stderr, "bench_lama: %s\n", e.what());
    return static_cast<int>(e.code());
  }
  return 0;
}
