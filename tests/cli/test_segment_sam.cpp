// lli-segment with the sam backend on the sam-tiny-a fixture: masks equal the reference's
// post-processed masks (except pixels whose logit is within 1e-4 of zero).
#include <cstring>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "cli/cli_run.h"
#include "lli/safetensors.h"

using lli::test::Run;
using lli::test::run;
using lli::test::slurp;
using lli::test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path sam_dir() { return lli::test::fixtures_dir() / "sam-tiny-a"; }
std::string sam_cmd() {
  return "lli-segment -m '" + sam_dir().string() + "' -i '" + (sam_dir() / "image.png").string() + "' --dtype f32 ";
}

// A golden tensor as a float or uint8 vector.
template <class T>
std::vector<T> golden(const std::string& name) {
  auto file = lli::st::File::open(sam_dir() / "golden.safetensors");
  for (const auto& t : file.tensors())
    if (t.name == name) {
      std::vector<T> out(t.nbytes / sizeof(T));
      std::memcpy(out.data(), t.data, t.nbytes);
      return out;
    }
  FAIL("golden.safetensors has no " << name);
  return {};
}

// Compares a written mask with candidate `k` of the golden masks of `key` (e.g. "points.single"):
// returns the number of differing pixels whose golden logit is NOT within 1e-4 of zero.
int mask_mismatches(const fs::path& png, const std::string& key, int k) {
  cv::Mat m = cv::imread(png.string(), cv::IMREAD_UNCHANGED);
  REQUIRE_MESSAGE(!m.empty(), png.string());
  REQUIRE(m.type() == CV_8UC1);
  REQUIRE(m.size() == cv::imread((sam_dir() / "image.png").string()).size());  // the original size
  auto want = golden<std::uint8_t>(key + ".masks_original_size");
  auto logits = golden<float>(key + ".masks_logits_original_size");
  const int hw = m.rows * m.cols;
  REQUIRE(static_cast<int>(logits.size()) == static_cast<int>(want.size()));
  REQUIRE(static_cast<int>(want.size()) >= (k + 1) * hw);
  int bad = 0;
  for (int i = 0; i < hw; ++i) {
    const bool got = m.data[i] != 0, exp = want[k * hw + i] != 0;
    if (got != exp && std::abs(logits[k * hw + i]) > 1e-4f) ++bad;
  }
  return bad;
}

}  // namespace

TEST_CASE("cli sam: points, --multimask off gives the reference's single mask") {
  TempDir t;
  Run r = run(sam_cmd() + "--point 12,10 --point 30,25 --point 40,33,neg --multimask off -o m.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  REQUIRE(j["masks"].size() == 1);
  CHECK(j["masks"][0]["score"].get<double>() == doctest::Approx(golden<float>("points.single.iou_scores")[0]).epsilon(1e-4));
  CHECK(mask_mismatches(t / "m.png", "points.single", 0) == 0);
}

TEST_CASE("cli sam: points, --multimask best keeps the candidate with the highest predicted IoU") {
  TempDir t;
  Run r = run(sam_cmd() + "--point 12,10 --point 30,25 --point 40,33,neg -o m.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  auto iou = golden<float>("points.multimask.iou_scores");
  const int best = static_cast<int>(std::max_element(iou.begin(), iou.end()) - iou.begin());
  json j = json::parse(r.out);
  CHECK(j["masks"][0]["mask_token"].get<int>() == best + 1);
  CHECK(mask_mismatches(t / "m.png", "points.multimask", best) == 0);
}

TEST_CASE("cli sam: a box, and a box plus a point, match the reference") {
  TempDir t;
  Run r = run(sam_cmd() + "--box 8,6,36,30 --multimask off -o box.png", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(mask_mismatches(t / "box.png", "box.single", 0) == 0);
  r = run(sam_cmd() + "--box 20,12,46,38 --point 33,24 --multimask all -o bp.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  REQUIRE(json::parse(r.out)["masks"].size() == 3);
  for (int k = 0; k < 3; ++k) CHECK(mask_mismatches(t / ("bp-" + std::to_string(k) + ".png"), "box_point.multimask", k) == 0);
}

TEST_CASE("cli sam: several boxes give numbered masks, and the session caches the embedding") {
  TempDir t;
  Run r = run(sam_cmd() + "--box 8,6,36,30 --box 20,12,46,38 --multimask off -o obj.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  REQUIRE(j["masks"].size() == 2);
  CHECK(j["masks"][1]["path"] == "obj-1.png");
  CHECK(mask_mismatches(t / "obj-0.png", "box.single", 0) == 0);
  CHECK(run(sam_cmd() + "--box 8,6,36,30 --box 20,12,46,38 -o -", t).code == 2);  // two masks, one stdout

  r = run(sam_cmd() + "--point 12,10 --point 30,25 --point 40,33,neg --multimask off --session s.json --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(json::parse(r.out)["timings"]["embedding"] == "computed");
  const std::string model = "-m '" + sam_dir().string() + "' --dtype f32 ";
  r = run("lli-segment " + model + "--session s.json --box 8,6,36,30 --multimask off --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j2 = json::parse(r.out);
  CHECK(j2["timings"]["embedding"] == "cached");
  CHECK(mask_mismatches(t.path / j2["masks"][0]["path"].get<std::string>(), "box.single", 0) == 0);
  json s = json::parse(slurp(t / "s.json"));
  CHECK(s["cache"].size() == 1);
  CHECK(s["masks"].size() == 1);
}

TEST_CASE("cli sam: --everything returns filtered automatic masks, and bad checkpoints exit 4") {
  TempDir t;
  Run r = run(sam_cmd() + "--everything --points-per-side 4 --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(json::parse(r.out)["masks"].is_array());
  fs::create_directories(t / "broken");
  fs::copy_file(sam_dir() / "config.json", t / "broken" / "config.json");
  std::ofstream(t / "broken" / "model.safetensors") << "version https://git-lfs.github.com/spec/v1\n";
  r = run("lli-segment -m broken -i '" + (sam_dir() / "image.png").string() + "' --point 5,5 -o m.png", t);
  CHECK(r.code == 4);
  CHECK(r.err.find("model.safetensors") != std::string::npos);
  CHECK_FALSE(fs::exists(t / "m.png"));
}

TEST_CASE("cli sam: --backend sam without -m takes the shipped demo-sam when the default SAM is not installed") {
  TempDir t;
  // LLI_MODELS points the registry's sam-vit-base at an empty place: not installed.
  const std::string env = "export LLI_MODELS='" + (t / "no-models").string() + "'; ";
  const std::string img = (sam_dir() / "image.png").string();
  Run r = run(env + "lli-segment --backend sam -i '" + img + "' --point 20,20 -o m.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK_MESSAGE(r.err.find("'sam-vit-base' is not installed; using the demo model 'demo-sam'") != std::string::npos, r.err);
  CHECK(json::parse(r.out)["model"] == "demo-sam");
  CHECK(fs::exists(t / "m.png"));
  // A model the user names is never replaced.
  r = run(env + "lli-segment -m sam-vit-base -i '" + img + "' --point 20,20 -o m2.png", t);
  CHECK(r.code == 4);
  CHECK_MESSAGE(r.err.find("not installed") != std::string::npos, r.err);
  CHECK_FALSE(fs::exists(t / "m2.png"));
}
