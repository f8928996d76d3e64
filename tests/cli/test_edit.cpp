// lli-edit's neural paths end to end: remove with LaMa on lama-tiny-a (the reference's output.png),
// inpaint with GLIGEN on gligen-inpaint-tiny-a (the reference's pixels inside the boxes), and on a
// real photo (samples/messi5.jpg, 548x342) the crop strategies of remove / replace and move, where
// every pixel outside the edited region must stay bit-identical to the input.
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>

#include "cli/cli_run.h"
#include "cli/image_diff.h"

using lli::test::Run;
using lli::test::run;
using lli::test::slurp;
using lli::test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path lama_dir() { return lli::test::fixtures_dir() / "lama-tiny-a"; }
fs::path gligen_dir() { return lli::test::fixtures_dir() / "gligen-inpaint-tiny-a"; }
std::string q(const fs::path& p) { return "'" + p.string() + "'"; }
std::string photo() { return q(lli::test::samples_dir() / "messi5.jpg"); }

cv::Mat load(const fs::path& p, int flags = cv::IMREAD_COLOR) { return lli::test::load_image(p, flags); }
using lli::test::count_changed;
using lli::test::max_diff;

// 255 where the pixel is farther than r from c.
cv::Mat outside_circle(cv::Size s, cv::Point c, int r) {
  cv::Mat m(s, CV_8UC1, cv::Scalar(255));
  cv::circle(m, c, r, cv::Scalar(0), cv::FILLED);
  return m;
}

// A disc mask on the ball of messi5.jpg.
const cv::Point kBall(362, 312);
void write_ball_mask(const TempDir& t, int r = 25) {
  cv::Mat m = cv::Mat::zeros(342, 548, CV_8UC1);
  cv::circle(m, kBall, r, cv::Scalar(255), cv::FILLED);
  REQUIRE(cv::imwrite((t / "ball.png").string(), m));
}

}  // namespace

TEST_CASE("cli edit remove: LaMa on lama-tiny-a gives the reference's output.png") {
  TempDir t;
  // The fixture's mask holds 0, 1, 96 and 255: every non-zero pixel is hole, as the reference's.
  cv::Mat mask = load(lama_dir() / "mask.png", cv::IMREAD_GRAYSCALE) > 0;
  Run r = run("lli-edit remove --backend lama -m " + q(lama_dir()) + " -i " + q(lama_dir() / "image.png") +
                  " --mask " + q(lama_dir() / "mask.png") + " --dilate 0 --dtype f32 -o out.png --json",
              t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  CHECK(j["backend"] == "lama");
  CHECK(j["dilate"] == 0);
  CHECK(j["changed_area"] == cv::countNonZero(mask));
  cv::Mat out = load(t / "out.png"), ref = load(lama_dir() / "output.png"), in = load(lama_dir() / "image.png");
  const int d = max_diff(out, ref);
  MESSAGE("max |diff| vs LaMa's output.png: " << d);
  CHECK(d <= 1);
  CHECK(max_diff(out, in, mask == 0) == 0);  // outside the mask: the input's own pixels

  // auto picks LaMa when -m names an installed checkpoint, and says nothing about telea.
  Run a = run("lli-edit remove -m " + q(lama_dir()) + " -i " + q(lama_dir() / "image.png") +
                  " --mask " + q(lama_dir() / "mask.png") + " --dilate 0 --dtype f32 -o auto.png --json",
              t);
  REQUIRE_MESSAGE(a.code == 0, a.err);
  CHECK(json::parse(a.out)["backend"] == "lama");
  CHECK(max_diff(load(t / "auto.png"), out) == 0);

  Run missing = run("lli-edit remove --backend lama -m /nonexistent/lama -i " + q(lama_dir() / "image.png") + " --mask " +
                        q(lama_dir() / "mask.png") + " -o x.png",
                    t);
  CHECK(missing.code == 4);
  CHECK(missing.err.find("/nonexistent/lama") != std::string::npos);
  CHECK(!fs::exists(t / "x.png"));
}

TEST_CASE("cli edit remove: without big-lama, auto stays Telea and --backend lama takes the shipped demo-lama") {
  TempDir t;
  // LLI_MODELS points the registry's big-lama at an empty place: not installed.
  const std::string env = "export LLI_MODELS='" + (t / "no-models").string() + "'; ";
  const std::string args = " -i " + q(lama_dir() / "image.png") + " --mask " + q(lama_dir() / "mask.png") + " --json ";
  Run a = run(env + "lli-edit remove" + args + "-o auto.png", t);
  REQUIRE_MESSAGE(a.code == 0, a.err);
  CHECK(json::parse(a.out)["backend"] == "telea");
  Run l = run(env + "lli-edit remove --backend lama" + args + "-o demo.png", t);
  REQUIRE_MESSAGE(l.code == 0, l.err);
  CHECK_MESSAGE(l.err.find("'big-lama' is not installed; using the demo model 'demo-lama'") != std::string::npos, l.err);
  const json j = json::parse(l.out);
  CHECK(j["backend"] == "lama");
  CHECK(j["model"] == "demo-lama");
  CHECK(fs::exists(t / "demo.png"));
  // A model the user names is never replaced.
  Run m = run(env + "lli-edit remove --backend lama -m big-lama" + args + "-o named.png", t);
  CHECK(m.code == 4);
  CHECK_FALSE(fs::exists(t / "named.png"));
}

TEST_CASE("cli edit remove: LaMa on a photo above --max-side runs on a crop, outside the mask nothing changes") {
  TempDir t;
  write_ball_mask(t);
  Run r = run("lli-edit remove --backend lama -m " + q(lama_dir()) + " -i " + photo() +
                  " --mask ball.png --dilate 4 --max-side 256 --dtype f32 -o out.png --json",
              t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  CHECK(j["cropped"] == true);
  CHECK(j["dilate"] == 4);
  cv::Mat in = load(lli::test::samples_dir() / "messi5.jpg"), out = load(t / "out.png");
  CHECK(max_diff(out, in, outside_circle(in.size(), kBall, 25 + 4 + 1)) == 0);
  CHECK(count_changed(out, in) > 1000);  // the hole was filled with something else
}

TEST_CASE("cli edit inpaint: GLIGEN inpainting on gligen-inpaint-tiny-a gives the reference's pixels in the boxes") {
  TempDir t;
  Run r = run("lli-edit inpaint -m " + q(gligen_dir()) + " -i " + q(gligen_dir() / "inpaint_input.png") +
                  " --box '0.1,0.2,0.55,0.7,a birthday cake' --box '0.6,0.5,0.95,0.9,a candle' --normalized"
                  " --text 'a birthday cake on a wooden table' --steps 5 --guidance 7.5 --beta 0.3 --seed 43"
                  " --noise-seed 1234 --feather 0 --dtype f32 -o out.png --json",
              t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  CHECK(j["seed"] == 43);
  CHECK(j["model_size"] == 64);
  CHECK(j["crop"] == json::array({0, 0, 64, 64}));  // the whole 64 px image: the model ran on it as is
  CHECK(j["boxes"].size() == 2);
  CHECK(j["timings"].contains("unet_ms_per_call"));
  cv::Mat out = load(t / "out.png"), ref = load(gligen_dir() / "output.png"), in = load(gligen_dir() / "inpaint_input.png");
  // The boxes in pixels (floor / ceil of 0.1*64 ...): the pasted region.
  cv::Mat region = cv::Mat::zeros(64, 64, CV_8UC1);
  cv::rectangle(region, cv::Point(6, 12), cv::Point(35, 44), cv::Scalar(255), cv::FILLED);
  cv::rectangle(region, cv::Point(38, 32), cv::Point(60, 57), cv::Scalar(255), cv::FILLED);
  CHECK(j["changed_area"] == cv::countNonZero(region));
  const int d = max_diff(out, ref, region);
  MESSAGE("max |diff| inside the boxes vs diffusers' output.png: " << d);
  CHECK(d <= 1);
  CHECK(max_diff(out, in, region == 0) == 0);

  Run nophrase = run("lli-edit inpaint -m " + q(gligen_dir()) + " -i " + q(gligen_dir() / "inpaint_input.png") +
                         " --box 1,1,20,20 -o x.png",
                     t);
  CHECK(nophrase.code == 3);
  CHECK(nophrase.err.find("phrase") != std::string::npos);
  Run withmask = run("lli-edit inpaint -m " + q(gligen_dir()) + " -i " + q(gligen_dir() / "inpaint_input.png") +
                         " --box 1,1,20,20,cat --mask m.png -o x.png",
                     t);
  CHECK(withmask.code == 2);
  Run gen = run("lli-edit inpaint -m " + q(lli::test::fixtures_dir() / "gligen-gen-tiny-a") + " -i " +
                    q(gligen_dir() / "inpaint_input.png") + " --box 1,1,20,20,cat -o x.png",
                t);
  CHECK(gen.code == 4);  // a text-to-image checkpoint is not an inpainting model
  CHECK(gen.err.find("inpainting") != std::string::npos);
  CHECK(!fs::exists(t / "x.png"));
}

TEST_CASE("cli edit replace: a photo's object redrawn in a square crop, outside the feathered mask nothing changes") {
  TempDir t;
  write_ball_mask(t);
  Run r = run("lli-edit replace -m " + q(gligen_dir()) + " -i " + photo() +
                  " --mask ball.png --text 'a red apple' --steps 2 --seed 1 --dtype f32 --session s.json --session-dir s --json",
              t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  CHECK(j["phrase"] == "a red apple");
  CHECK(j["model_size"] == 64);
  const int dilate = j["dilate"].get<int>(), feather = j["feather"].get<int>();
  CHECK(dilate == 10);  // a fifth of remove's default round(50 * 548 / 512) = 53
  // The crop: a square around the dilated ball (70 px) plus context, inside the image.
  const auto crop = j["crop"];
  CHECK(crop[2].get<int>() - crop[0].get<int>() == crop[3].get<int>() - crop[1].get<int>());
  CHECK(crop[0].get<int>() <= kBall.x - 35);
  CHECK(crop[2].get<int>() >= kBall.x + 35);
  json s = json::parse(slurp(t / "s.json"));
  REQUIRE(s["steps"].size() == 2);  // the input image, then the edit
  CHECK(s["steps"][1]["op"] == "replace");
  CHECK(s["steps"][1]["seed"] == 1);
  cv::Mat in = load(lli::test::samples_dir() / "messi5.jpg");
  cv::Mat out = load(t / "s" / s["steps"][1]["file"].get<std::string>());
  CHECK(max_diff(out, in, outside_circle(in.size(), kBall, 25 + dilate + feather + 3)) == 0);
  CHECK(count_changed(out, in) > 1000);
}

TEST_CASE("cli edit move: the object's own pixels move, the hole is filled, everything else is untouched") {
  TempDir t;
  write_ball_mask(t);
  cv::Mat in = load(lli::test::samples_dir() / "messi5.jpg");
  Run r = run("lli-edit move -i " + photo() + " --mask ball.png --offset=-150,-20 --backend telea --dilate 3 -o moved.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  CHECK(j["backend"] == "telea");
  CHECK(j["out_of_frame"] == false);
  CHECK(j["from"] == json::array({kBall.x - 25, kBall.y - 25, kBall.x + 26, kBall.y + 26}));
  CHECK(j["to"] == json::array({kBall.x - 175, kBall.y - 45, kBall.x - 124, kBall.y + 6}));
  cv::Mat out = load(t / "moved.png");
  // The object's interior sits at its new place, pixel for pixel.
  const cv::Rect src(kBall.x - 15, kBall.y - 15, 30, 30);
  CHECK(max_diff(out(src - cv::Point(150, 20)).clone(), in(src).clone()) == 0);
  // Outside the hole (r 25 + 3) and the pasted object (r 25 + feather 4): the input's pixels.
  cv::Mat keep = outside_circle(in.size(), kBall, 25 + 3 + 3) & outside_circle(in.size(), kBall - cv::Point(150, 20), 25 + 4 + 3);
  CHECK(max_diff(out, in, keep) == 0);
  CHECK(count_changed(out, in, outside_circle(in.size(), kBall - cv::Point(150, 20), 30)) > 500);  // the hole is filled

  // Poisson blending keeps the rest of the image too.
  Run p = run("lli-edit move -i " + photo() + " --mask ball.png --offset=-150,-20 --backend telea --blend poisson -o p.png", t);
  REQUIRE_MESSAGE(p.code == 0, p.err);
  CHECK(max_diff(load(t / "p.png"), in, outside_circle(in.size(), kBall, 25 + 54 + 3) &
                                              outside_circle(in.size(), kBall - cv::Point(150, 20), 25 + 8 + 3)) == 0);

  // Out of the frame = removed.
  Run gone = run("lli-edit move -i " + photo() + " --mask ball.png --to-box 600,10,650,60 --backend telea -o gone.png --json", t);
  REQUIRE_MESSAGE(gone.code == 0, gone.err);
  CHECK(json::parse(gone.out)["out_of_frame"] == true);
  CHECK(gone.err.find("removed") != std::string::npos);

  // --regenerate: the object is redrawn by GLIGEN inpainting at the target box.
  Run rg = run("lli-edit move -i " + photo() + " --mask ball.png --to-box 100,100,160,160 --regenerate --text 'a ball'"
               " --gligen-model " + q(gligen_dir()) + " --backend telea --steps 2 --seed 2 --dtype f32 -o rg.png --json",
               t);
  REQUIRE_MESSAGE(rg.code == 0, rg.err);
  json jr = json::parse(rg.out);
  CHECK(jr["regenerate"] == true);
  CHECK(jr["seed"] == 2);
  cv::Mat keep2 = outside_circle(in.size(), kBall, 25 + 54 + 3);
  cv::rectangle(keep2, cv::Point(100 - 11, 100 - 11), cv::Point(160 + 11, 160 + 11), cv::Scalar(0), cv::FILLED);
  CHECK(max_diff(load(t / "rg.png"), in, keep2) == 0);

  Run both = run("lli-edit move -i " + photo() + " --mask ball.png --offset 1,1 --to-box 1,1,9,9 -o x.png", t);
  CHECK(both.code == 2);
  Run none = run("lli-edit move -i " + photo() + " --mask ball.png -o x.png", t);
  CHECK(none.code == 2);
  Run noregen = run("lli-edit move -i " + photo() + " --mask ball.png --offset 1,1 --regenerate -o x.png", t);
  CHECK(noregen.code == 2);
  CHECK(!fs::exists(t / "x.png"));
}
