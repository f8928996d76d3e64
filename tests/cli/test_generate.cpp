// lli-generate on the gligen-gen-tiny-a fixture: the PNG equals diffusers' output (max |diff| <= 1),
// parameters round-trip through the PNG's text chunks (--from-png), numbered images, sessions,
// JSON Lines batches (resume, shards), a plain SD checkpoint, and usage / input / model errors.
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <fstream>

#include "cli/cli_run.h"
#include "cli/image_diff.h"
#include "io/png_text.h"
#include "lli/safetensors.h"

using lli::test::Run;
using lli::test::run;
using lli::test::slurp;
using lli::test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path gen_dir() { return lli::test::fixtures_dir() / "gligen-gen-tiny-a"; }

// The fixture's pipeline call as flags (case.json pipeline_call).
std::string fixture_cmd(const fs::path& model = gen_dir()) {
  return "lli-generate -m '" + model.string() +
         "' 'A photo of a Cat sitting next to a green lamp, photorealistic!' "
         "--box '0.1,0.25,0.45,0.9,a cat' --box '0.55,0.1,0.92,0.6,a green lamp' --normalized "
         "--steps 5 --guidance 7.5 --beta 0.3 --seed 42 --width 64 --height 64 --dtype f32 ";
}

using lli::test::max_pixel_diff;

// A copy of the fixture whose UNet has no GLIGEN keys (a plain Stable Diffusion pipeline).
fs::path plain_sd_copy(const TempDir& t) {
  const fs::path dir = t / "plain-sd";
  fs::copy(gen_dir(), dir, fs::copy_options::recursive);
  for (auto& e : fs::recursive_directory_iterator(dir)) fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  const fs::path unet = dir / "unet" / "diffusion_pytorch_model.safetensors";
  {
    auto f = lli::st::File::open(unet);
    std::vector<std::string> names;
    std::vector<std::string> keep_bytes;
    std::vector<lli::st::TensorData> keep;
    for (const auto& t2 : f.tensors()) {
      if (t2.name.find(".fuser.") != std::string::npos || t2.name.rfind("position_net.", 0) == 0) continue;
      keep.push_back({t2.name, t2.dtype, t2.shape, t2.data, t2.nbytes});
    }
    lli::st::write_file(dir / "unet" / "new.safetensors", keep);
  }
  fs::rename(dir / "unet" / "new.safetensors", unet);
  json cfg = json::parse(slurp(dir / "unet" / "config.json"));
  cfg["attention_type"] = "default";
  std::ofstream(dir / "unet" / "config.json") << cfg.dump(2);
  json index = json::parse(slurp(dir / "model_index.json"));
  index["_class_name"] = "StableDiffusionPipeline";
  std::ofstream(dir / "model_index.json") << index.dump(2);
  return dir;
}

}  // namespace

TEST_CASE("cli generate: the fixture's pipeline call gives the reference's PNG") {
  TempDir t;
  Run r = run(fixture_cmd() + "-o out.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  CHECK(j["seed"].get<std::uint64_t>() == 42);
  CHECK(j["scheduler"] == "PNDMScheduler");
  CHECK(j["unet_calls"] == 6);
  CHECK(j["grounding_calls"] == 1);
  CHECK(j["images"][0]["path"] == "out.png");
  CHECK(j["timings"].contains("unet_ms_per_call"));
  const int d = max_pixel_diff(t / "out.png", gen_dir() / "output.png");
  MESSAGE("max |diff| vs diffusers' output.png: " << d);
  CHECK(d <= 1);

  // Every parameter is in the PNG; --from-png regenerates the same pixels.
  auto text = lli::read_png_text(slurp(t / "out.png"), "out.png");
  std::map<std::string, std::string> kv(text.begin(), text.end());
  CHECK(kv["seed"] == "42");
  CHECK(kv["prompt"] == "A photo of a Cat sitting next to a green lamp, photorealistic!");
  CHECK(kv["scheduler"] == "auto");
  CHECK(json::parse(kv["layout"])["boxes"].size() == 2);
  CHECK(json::parse(kv["lli-generate"])["model"] == gen_dir().string());
  Run again = run("lli-generate --from-png out.png --dtype f32 -o again.png", t);
  REQUIRE_MESSAGE(again.code == 0, again.err);
  CHECK(max_pixel_diff(t / "out.png", t / "again.png") == 0);
}

TEST_CASE("cli generate: several images, other schedulers, no seed, errors before work") {
  TempDir t;
  Run r = run(fixture_cmd() + "--num-images 2 --steps 2 -o set.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(fs::exists(t / "set-0.png"));
  CHECK(fs::exists(t / "set-1.png"));
  CHECK(json::parse(r.out)["images"].size() == 2);
  // Image 1 of the set regenerates alone from its own PNG.
  Run one = run("lli-generate --from-png set-1.png --dtype f32 -o one.png", t);
  REQUIRE_MESSAGE(one.code == 0, one.err);
  CHECK(max_pixel_diff(t / "set-1.png", t / "one.png") == 0);

  for (const char* s : {"ddim", "euler", "euler-a", "dpm++2m"}) {
    Run rs = run(fixture_cmd() + "--steps 3 --scheduler " + s + " -o s.png --json", t);
    REQUIRE_MESSAGE(rs.code == 0, s << ": " << rs.err);
    CHECK(fs::exists(t / "s.png"));
  }
  Run ns = run("lli-generate -m '" + gen_dir().string() + "' 'a cat' --steps 2 --dtype f32 -o n.png --json", t);
  REQUIRE_MESSAGE(ns.code == 0, ns.err);
  CHECK(ns.err.find("seed") != std::string::npos);  // the random seed is printed

  Run w = run(fixture_cmd() + "--width 60 -o x.png", t);
  CHECK(w.code == 2);
  CHECK(w.err.find("multiples") != std::string::npos);
  Run sc = run(fixture_cmd() + "--scheduler heun -o x.png", t);
  CHECK(sc.code == 2);
  Run nothing = run("lli-generate -m '" + gen_dir().string() + "' -o x.png", t);
  CHECK(nothing.code == 2);
  Run nomodel = run("lli-generate -m /nonexistent/model 'x' -o x.png", t);
  CHECK(nomodel.code == 4);
  std::ofstream(t / "pts.json") << R"({"points": [{"x": 1, "y": 2}]})";
  Run pts = run("lli-generate -m '" + gen_dir().string() + "' 'x' --layout pts.json -o x.png", t);
  CHECK(pts.code == 3);
  std::ofstream(t / "notpng.png") << "hello";
  Run fp = run("lli-generate --from-png notpng.png -o x.png", t);
  CHECK(fp.code == 3);
  CHECK(!fs::exists(t / "x.png"));
}

TEST_CASE("cli generate: a plain SD checkpoint generates text-only and refuses boxes") {
  TempDir t;
  const fs::path sd = plain_sd_copy(t);
  Run r = run("lli-generate -m '" + sd.string() + "' 'a cat' --steps 2 --seed 1 --dtype f32 -o sd.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(json::parse(r.out)["grounding_calls"] == 0);
  Run b = run(fixture_cmd(sd) + "-o sdb.png", t);
  CHECK(b.code == 2);
  CHECK(b.err.find("GLIGEN") != std::string::npos);
}

TEST_CASE("cli generate: session step and JSON Lines batch with resume and shards") {
  TempDir t;
  Run r = run(fixture_cmd() + "--steps 2 --session s.json --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json s = json::parse(slurp(t / "s.json"));
  REQUIRE(s["steps"].size() == 1);
  CHECK(s["steps"][0]["tool"] == "lli-generate");
  CHECK(s["steps"][0]["op"] == "generate");
  CHECK(s["steps"][0]["seed"] == 42);
  CHECK(s["steps"][0]["parent"].is_null());
  CHECK(s["steps"][0]["params"]["boxes"].size() == 2);

  std::ofstream(t / "p.jsonl") << R"({"text": "a red cat", "seed": 3, "name": "cat"})" << "\n"
                               << "\n# a comment\n"
                               << R"({"text": "a lamp", "boxes": [{"box": [8, 8, 40, 56], "phrase": "a lamp"}], "seed": 4})"
                               << "\n";
  const std::string base = "lli-generate -m '" + gen_dir().string() + "' --steps 2 --dtype f32 --batch p.jsonl --outdir out ";
  Run b1 = run(base + "--shard 1/2 --json", t);
  REQUIRE_MESSAGE(b1.code == 0, b1.err);
  CHECK(fs::exists(t / "out" / "cat.png"));
  CHECK(!fs::exists(t / "out" / "0001.png"));
  Run b2 = run(base + "--json", t);
  REQUIRE_MESSAGE(b2.code == 0, b2.err);
  CHECK(fs::exists(t / "out" / "0001.png"));
  CHECK(b2.err.find("skipped") != std::string::npos);  // cat.png was resumed, not redone

  std::ofstream(t / "bad.jsonl") << R"({"text": "x", "seed": "seven"})" << "\n";
  Run bb = run("lli-generate -m '" + gen_dir().string() + "' --steps 2 --batch bad.jsonl --outdir out2", t);
  CHECK(bb.code == 3);
  CHECK(bb.err.find("bad.jsonl:1") != std::string::npos);
}

TEST_CASE("cli generate: --layout-from-session turns lli-segment masks into layout boxes") {
  TempDir t;
  const fs::path photo = lli::test::samples_dir() / "messi5.jpg";
  // GrabCut on the ball (a box with a phrase): the session's latest mask carries the phrase.
  Run seg = run("lli-segment --backend grabcut -i '" + photo.string() +
                    "' --box '332,283,393,341,a red ball' --stroke '350,312 375,312' --session s.json",
                t);
  REQUIRE_MESSAGE(seg.code == 0, seg.err);
  Run r = run("lli-generate -m '" + gen_dir().string() + "' 'a beach' --steps 2 --seed 5 --dtype f32 --session s.json "
              "--layout-from-session --json",
              t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  REQUIRE(j["boxes"].size() == 1);
  CHECK(j["boxes"][0]["phrase"] == "a red ball");
  const double x0 = j["boxes"][0]["box"][0].get<double>(), x1 = j["boxes"][0]["box"][2].get<double>();
  CHECK(x0 > 0.5);  // the ball is right of centre in messi5.jpg (548 px wide)
  CHECK(x1 < 0.75);
  CHECK(j["grounding_calls"] == 0);  // int(0.3 * 2) = 0 grounded calls with 2 steps
  json s = json::parse(slurp(t / "s.json"));
  CHECK(s["steps"].size() == 2);  // the photo, then the generated image as a new root
  CHECK(s["steps"][1]["parent"].is_null());
  Run np = run("lli-generate -m '" + gen_dir().string() + "' 'x' --layout-from-session -o y.png", t);
  CHECK(np.code == 2);  // needs --session
}

TEST_CASE("cli generate: without -m takes the shipped demo-gligen when gligen-generation is not installed") {
  TempDir t;
  // LLI_MODELS points the registry's gligen-generation at an empty place: not installed.
  const std::string env = "export LLI_MODELS='" + (t / "no-models").string() + "'; ";
  Run r = run(env + "lli-generate 'a red circle left of a blue square' --box '4,20,28,44,red circle' "
                    "--box '36,20,60,44,blue square' --steps 10 --seed 1 -o scene.png --json",
              t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK_MESSAGE(r.err.find("'gligen-generation' is not installed; using the demo model 'demo-gligen'") != std::string::npos,
                r.err);
  const json j = json::parse(r.out);
  CHECK(j["model"] == "demo-gligen");
  const cv::Mat img = cv::imread((t / "scene.png").string());
  REQUIRE(!img.empty());
  CHECK(img.cols == 64);  // the demo model's default size (sample_size x VAE factor)
  // demo-gligen's own defaults (models.yaml: beta 1.0) apply, and say so; a flag still wins.
  CHECK(j["beta"] == 1.0);
  CHECK_MESSAGE(r.err.find("demo-gligen's defaults from") != std::string::npos, r.err);
  Run b = run(env + "lli-generate -m demo-gligen 'a red circle' --steps 2 --beta 0.3 -o b.png --json", t);
  REQUIRE_MESSAGE(b.code == 0, b.err);
  CHECK(json::parse(b.out)["beta"] == 0.3);
  CHECK(b.err.find("defaults from") == std::string::npos);
  // A model the user names is never replaced.
  Run m = run(env + "lli-generate -m gligen-generation 'a red circle' -o named.png", t);
  CHECK(m.code == 4);
  CHECK(!fs::exists(t / "named.png"));
}
