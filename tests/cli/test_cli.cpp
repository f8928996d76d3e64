// CLI tests: run the real executables (built into LLI_BIN_DIR) on real photos.
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "cli/cli_run.h"

using lli::test::TempDir;
using lli::test::Run;
using lli::test::run;
using lli::test::slurp;
using lli::test::bin;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {


std::string sample(const std::string& name) { return (lli::test::samples_dir() / name).string(); }

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// No leftover temp files anywhere under dir.
bool no_temp_files(const fs::path& dir) {
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".lli-tmp-") != std::string::npos) return false;
  return true;
}

const char* kBallPrompt = "--stroke '350,312 375,312' --stroke-width 6 --box 332,283,393,341";

}  // namespace

TEST_CASE("cli: every tool prints --help with examples and exits 0") {
  TempDir t;
  for (const char* tool : {"lli-segment", "lli-edit", "lli-chat", "lli-generate"}) {
    Run r = run(std::string(tool) + " --help", t);
    CHECK_MESSAGE(r.code == 0, tool);
    CHECK(r.out.find("Examples:") != std::string::npos);
    CHECK(r.out.find("Exit codes") != std::string::npos);
  }
}

TEST_CASE("cli: unknown flags and bad values are usage errors (exit 2)") {
  TempDir t;
  Run r = run("lli-segment --no-such-flag", t);
  CHECK(r.code == 2);
  CHECK(r.err.find("lli-segment: error:") != std::string::npos);
  r = run("lli-edit remove -i x.png --dilate -3 -o y.png", t);
  CHECK(r.code == 2);
  r = run("lli-edit", t);  // a subcommand is required
  CHECK(r.code == 2);
  r = run("lli-segment -i " + sample("messi5.jpg") + " --point 10,abc -o m.png", t);
  CHECK(r.code == 2);
  CHECK(r.err.find("--point") != std::string::npos);
  CHECK(count_lines(r.err) == 1);
}

TEST_CASE("cli: grabcut segments the ball in messi5.jpg (stroke + box)") {
  TempDir t;
  Run r = run("lli-segment -i " + sample("messi5.jpg") + " " + kBallPrompt + " -o ball.png --overlay vis.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  REQUIRE(j["masks"].size() == 1);
  const auto& m = j["masks"][0];
  CHECK(m["path"] == "ball.png");
  const long area = m["area"];
  const double disc = 3.14159 * 24 * 24;  // the ball: centre (362,312), radius ~24
  CHECK(area > 0.6 * disc);
  CHECK(area < 2.0 * disc);
  cv::Mat mask = cv::imread((t / "ball.png").string(), cv::IMREAD_UNCHANGED);
  REQUIRE(mask.type() == CV_8UC1);
  cv::Mat inner = cv::Mat::zeros(mask.size(), CV_8UC1);
  cv::circle(inner, {362, 312}, 18, 255, -1);
  cv::Mat both;
  cv::bitwise_and(mask, inner, both);
  CHECK(cv::countNonZero(both) >= 0.85 * cv::countNonZero(inner));
  CHECK(fs::exists(t / "vis.png"));
  CHECK(no_temp_files(t.path));
}

TEST_CASE("cli: the same segmentation from a prompt file on the shared photo") {
  auto shared = lli::test::shared_dir();
  if (shared.empty()) LLI_SKIP("../shared is absent");
  TempDir t;
  Run r = run("lli-segment -i " + (shared / "images" / "messi5.jpg").string() + " --prompt " +
                  sample("prompts/messi5.json") + " -o ball.png --json",
              t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json j = json::parse(r.out);
  CHECK(j["masks"][0]["bbox"][0].get<int>() > 320);
  CHECK(j["masks"][0]["bbox"][2].get<int>() < 400);
}

TEST_CASE("cli: remove changes no pixel outside the dilated mask") {
  TempDir t;
  REQUIRE(run("lli-segment -i " + sample("messi5.jpg") + " " + kBallPrompt + " -o ball.png", t).code == 0);
  Run r = run("lli-edit remove -i " + sample("messi5.jpg") + " --mask ball.png --dilate 6 -o clean.png --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  cv::Mat in = cv::imread(sample("messi5.jpg"));
  cv::Mat out = cv::imread((t / "clean.png").string());
  cv::Mat mask = cv::imread((t / "ball.png").string(), cv::IMREAD_GRAYSCALE);
  REQUIRE(in.size() == out.size());
  cv::Mat dil;
  cv::dilate(mask, dil, cv::getStructuringElement(cv::MORPH_ELLIPSE, {13, 13}));
  cv::Mat diff;
  cv::absdiff(in, out, diff);
  cv::Mat changed;
  cv::cvtColor(diff, changed, cv::COLOR_BGR2GRAY);
  changed = changed > 0;
  cv::Mat outside;
  cv::bitwise_and(changed, ~dil, outside);
  CHECK(cv::countNonZero(outside) == 0);
  CHECK(cv::countNonZero(changed) > 500);  // the ball is gone
  json j = json::parse(r.out);
  CHECK(j["changed_area"].get<int>() == cv::countNonZero(dil));
}

TEST_CASE("cli: segment -o - pipes a mask into edit --mask -") {
  TempDir t;
  Run r = run("lli-segment -i " + sample("messi5.jpg") + " " + kBallPrompt + " -o - | lli-edit remove -i " +
                  sample("messi5.jpg") + " --mask - -o clean.png",
              t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(fs::file_size(t / "clean.png") > 1000);
}

TEST_CASE("cli: a pipe chain through --session -, then undo with --from-step") {
  TempDir t;
  Run r = run("lli-segment -i " + sample("messi5.jpg") + " " + kBallPrompt + " --session - --session-dir s" +
                  " | lli-edit remove --session - --session-dir s > s.json",
              t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json s = json::parse(slurp(t / "s.json"));
  REQUIRE(s["steps"].size() == 2);
  CHECK(s["current"] == 1);
  CHECK(s["steps"][0]["tool"] == "import");
  CHECK(s["steps"][1]["op"] == "remove");
  CHECK(s["steps"][1]["parent"] == 0);
  CHECK(s["masks"].size() == 1);
  CHECK(s["masks"][0]["step"] == 0);
  CHECK(fs::exists(t / "s" / s["steps"][1]["file"].get<std::string>()));

  // Undo: branch from step 0 with another dilation; history is only appended.
  r = run("lli-edit remove --session s.json --session-dir s --from-step 0 --dilate 1 --json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  json s2 = json::parse(slurp(t / "s.json"));
  REQUIRE(s2["steps"].size() == 3);
  CHECK(s2["steps"][2]["parent"] == 0);
  CHECK(s2["current"] == 2);
  CHECK(s2["steps"][1] == s["steps"][1]);
  CHECK(json::parse(r.out)["step"] == 2);

  // From the edited step (1) there is no mask: a clear input error, the session untouched.
  const std::string before = slurp(t / "s.json");
  r = run("lli-edit remove --session s.json --session-dir s --from-step 1", t);
  CHECK(r.code == 3);
  CHECK(r.err.find("mask") != std::string::npos);
  CHECK(slurp(t / "s.json") == before);
  r = run("lli-edit remove --session s.json --session-dir s --from-step 9", t);
  CHECK(r.code == 3);
  CHECK(no_temp_files(t.path));
}

TEST_CASE("cli: batch with resume and --shard") {
  TempDir t;
  fs::create_directories(t / "in");
  for (const char* n : {"a", "b", "c"}) fs::copy_file(sample("messi5.jpg"), t / "in" / (std::string(n) + ".jpg"));
  Run r1 = run("lli-segment -i in " + std::string(kBallPrompt) + " --outdir out --shard 1/2 --json", t);
  REQUIRE_MESSAGE(r1.code == 0, r1.err);
  CHECK(fs::exists(t / "out" / "a.mask.png"));
  CHECK_FALSE(fs::exists(t / "out" / "b.mask.png"));
  CHECK(fs::exists(t / "out" / "c.mask.png"));
  CHECK(count_lines(r1.out) == 2);
  Run r2 = run("lli-segment -i in " + std::string(kBallPrompt) + " --outdir out --shard 2/2 --json", t);
  REQUIRE(r2.code == 0);
  CHECK(fs::exists(t / "out" / "b.mask.png"));
  // Resume: everything exists now, so every item is skipped; --overwrite redoes them.
  Run r3 = run("lli-segment -i in " + std::string(kBallPrompt) + " --outdir out --json", t);
  REQUIRE(r3.code == 0);
  std::istringstream lines(r3.out);
  std::string line;
  int skipped = 0;
  while (std::getline(lines, line)) skipped += json::parse(line)["status"] == "skipped";
  CHECK(skipped == 3);
  Run r4 = run("lli-segment -i in " + std::string(kBallPrompt) + " --outdir out --overwrite --json", t);
  CHECK(r4.out.find("\"ok\"") != std::string::npos);
  // Masks paired by stem for removal; the inputs are never touched.
  const auto before = fs::file_size(t / "in" / "a.jpg");
  Run r5 = run("lli-edit remove -i in --mask out --outdir clean --json", t);
  REQUIRE_MESSAGE(r5.code == 0, r5.err);
  for (const char* n : {"a", "b", "c"}) CHECK(fs::exists(t / "clean" / (std::string(n) + ".png")));
  CHECK(fs::file_size(t / "in" / "a.jpg") == before);
  // @list input and a bad shard.
  std::ofstream(t / "list.txt") << "# two of them\nin/a.jpg\n\nin/c.jpg\n";
  Run r6 = run("lli-segment -i @list.txt " + std::string(kBallPrompt) + " --outdir out2 --json", t);
  CHECK(r6.code == 0);
  CHECK(count_lines(r6.out) == 2);
  CHECK(run("lli-segment -i in " + std::string(kBallPrompt) + " --outdir out --shard 3/2", t).code == 2);
  CHECK(run("lli-segment -i in " + std::string(kBallPrompt), t).code == 2);  // no --outdir
}

TEST_CASE("cli: a failing batch item does not stop the others") {
  TempDir t;
  fs::create_directories(t / "in");
  fs::copy_file(sample("messi5.jpg"), t / "in" / "a.jpg");
  std::ofstream(t / "in" / "b.png") << "not a png";
  fs::copy_file(sample("messi5.jpg"), t / "in" / "c.jpg");
  Run r = run("lli-segment -i in " + std::string(kBallPrompt) + " --outdir out --json", t);
  CHECK(r.code == 3);
  CHECK(fs::exists(t / "out" / "a.mask.png"));
  CHECK_FALSE(fs::exists(t / "out" / "b.mask.png"));
  CHECK(fs::exists(t / "out" / "c.mask.png"));
}

TEST_CASE("cli: malformed inputs give their exit code, one line, and no output file") {
  TempDir t;
  std::ofstream(t / "fake.png") << "this is not an image";
  std::ofstream(t / "bad.json") << "{\"points\": [{\"x\": 10, \"y\": }]}";
  std::ofstream(t / "inverted.json") << R"({"boxes": [{"box": [50, 50, 10, 10]}]})";
  std::ofstream(t / "session.json") << R"({"lli_session": 99, "steps": []})";
  const std::string img = sample("messi5.jpg");
  struct Case {
    std::string cmd;
    int code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"lli-segment -i fake.png --point 1,1 -o out.png", 3, "fake.png"},
      {"lli-segment -i missing.png --point 1,1 -o out.png", 3, "missing.png"},
      {"lli-segment -i " + img + " --prompt bad.json -o out.png", 3, "bad.json:1:"},
      {"lli-segment -i " + img + " --prompt inverted.json -o out.png", 3, "inverted.json"},
      {"lli-segment -i " + img + " --point 9999,5 -o out.png", 3, "9999"},
      {"lli-segment -i " + img + " --prompt missing.json -o out.png", 3, "missing.json"},
      {"lli-segment --session session.json --point 1,1 -o out.png", 3, "session.json"},
      {"lli-segment -i " + img + " --point 1,1 -o out.xyz", 2, "out.xyz"},
      // a named SAM that is not installed (without -m, --backend sam falls back to the shipped demo-sam)
      {"lli-segment -i " + img + " --point 1,1 --backend sam -m sam-vit-huge -o out.png", 4, "sam-vit-huge"},
      {"lli-edit remove -i " + img + " --mask fake.png -o out.png", 3, "fake.png"},
      {"lli-edit remove -i " + img + " --mask " + sample("fruits.jpg") + " -o out.png", 3, "mask is"},
      {"lli-edit remove -i " + img + " -o out.png", 2, "mask"},
      {"lli-edit inpaint -i " + img + " --box 1,1,20,20,cat -o out.png", 4, "not installed"},
      {"lli-edit move -i " + img + " --mask fake.png --offset 5,5 --backend telea -o out.png", 3, "fake.png"},
      {"lli-edit move -i " + img + " --mask fake.png --to 5,5 -o out.png", 2, "--to"},
      {"lli-edit replace -i " + img + " --mask fake.png -o out.png", 2, "--text"},
      // a named LLaVA that is not installed (without -m, lli-chat falls back to the shipped demo-llava)
      {"lli-chat -m llava-1.5-7b -i " + img + " 'what is this?'", 4, "llava-1.5-7b"},
      {"lli-chat -i " + img + " -m /nonexistent/ckpt 'what?'", 4, "/nonexistent/ckpt"},
      {"lli-chat -i fake.png 'what?'", 3, "fake.png"},
      // a named GLIGEN that is not installed (without -m, lli-generate falls back to the shipped demo-gligen)
      {"lli-generate -m gligen-generation --text 'a cat' -o out.png", 4, "model"},
      {"lli-chat -i " + img + " --device cuda 'what?'", 4, "CUDA"},
      {"lli-chat -i " + img + " --device tpu 'what?'", 2, "tpu"},
      {"lli-chat -i " + img + " --dtype f8 'what?'", 2, "f8"},
      {"lli-chat -i " + img + " --dtype f16 'what?'", 4, "f16"},
      {"lli-generate -m '" + (lli::test::fixtures_dir() / "gligen-gen-tiny-a").string() + "' --box 0,0,600,10,cat -o out.png", 3,
       "600"},
  };
  for (const auto& c : cases) {
    Run r = run(c.cmd, t);
    CHECK_MESSAGE(r.code == c.code, c.cmd << "\n" << r.err);
    CHECK_MESSAGE(r.err.find(c.needle) != std::string::npos, c.cmd << "\n" << r.err);
    CHECK_MESSAGE(count_lines(r.err) <= 2, c.cmd << "\n" << r.err);  // the error (+ libpng's own line)
    CHECK_MESSAGE(!fs::exists(t / "out.png"), c.cmd);
  }
  CHECK(no_temp_files(t.path));
}

TEST_CASE("cli: an output never overwrites its input") {
  TempDir t;
  fs::copy_file(sample("messi5.jpg"), t / "in.jpg");
  const auto size = fs::file_size(t / "in.jpg");
  Run r = run("lli-edit remove -i in.jpg --mask in.jpg -o in.jpg", t);
  CHECK(r.code == 2);
  CHECK(fs::file_size(t / "in.jpg") == size);
}

TEST_CASE("cli: Ctrl-C stops between steps and leaves no partial file") {
  TempDir t;
  // A large image so that GrabCut runs long enough to be interrupted.
  cv::Mat big;
  cv::resize(cv::imread(sample("messi5.jpg")), big, {2192, 1368});
  cv::imwrite((t / "big.png").string(), big);
  // The signal is sent once the tool has logged that it started segmenting (its handlers are
  // installed by then; a background job started by a script ignores SIGINT until they are).
  Run r = run("lli-segment -i big.png --box 1328,1132,1572,1364 --max-side 0 --iterations 20 -o out.png 2> log & "
              "pid=$!; for i in $(seq 600); do grep -q 'backend grabcut' log && break; sleep 0.1; done; "
              "sleep 0.3; kill -INT $pid; wait $pid; code=$?; cat log >&2; exit $code",
              t);
  CHECK_MESSAGE(r.code == 130, r.err);
  CHECK(r.err.find("interrupted") != std::string::npos);
  CHECK_FALSE(fs::exists(t / "out.png"));
  CHECK(no_temp_files(t.path));
}
