// Hardening (issue 11) with the real executables: deeply nested JSON / YAML in sessions, prompts
// and checkpoints is refused with the file's exit code and one line (no crash), duplicate keys
// and empty prompt files are bad inputs.
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cli/cli_run.h"

using lli::test::Run;
using lli::test::run;
using lli::test::slurp;
using lli::test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string sample(const std::string& name) { return "'" + (lli::test::samples_dir() / name).string() + "'"; }
std::string q(const fs::path& p) { return "'" + p.string() + "'"; }
fs::path lama_dir() { return lli::test::fixtures_dir() / "lama-tiny-a"; }

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string nested_arrays(std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// A 0/255 disc mask the size of messi5.jpg (548x342) on the ball.
void write_ball_mask(const fs::path& p) {
  cv::Mat m = cv::Mat::zeros(342, 548, CV_8UC1);
  cv::circle(m, cv::Point(362, 312), 20, cv::Scalar(255), cv::FILLED);
  REQUIRE(cv::imwrite(p.string(), m));
}

// A copy of lama-tiny-a in `dir` (the checkpoint files only).
fs::path copy_lama(const fs::path& dir) {
  fs::create_directories(dir);
  for (const char* f : {"config.yaml", "generator.safetensors"}) fs::copy_file(lama_dir() / f, dir / f);
  return dir;
}

// The command's stderr is one line naming `needle`, with exit code `code`.
void check_refused(const Run& r, int code, const std::string& needle, const std::string& what) {
  CHECK_MESSAGE(r.code == code, what << "\n" << r.err);
  CHECK_MESSAGE(r.err.find(needle) != std::string::npos, what << "\n" << r.err);
  CHECK_MESSAGE(count_lines(r.err) == 1, what << "\n" << r.err);
}

}  // namespace

TEST_CASE("cli hardening: a 200,000-deep session file is exit 3 and one line, not a crash") {
  TempDir t;
  write_ball_mask(t / "m.png");
  write_bytes(t / "s.json", "{\"lli_session\": " + nested_arrays(200000) + "}");
  REQUIRE(fs::file_size(t / "s.json") > 400000);
  Run r = run("lli-edit remove --backend telea --session s.json --mask m.png", t);
  check_refused(r, 3, "s.json:1:80: JSON nesting deeper than 64 levels", "deep session");
  // The same through stdin.
  r = run("lli-edit remove --backend telea --session - --mask m.png", t, (t / "s.json").string());
  check_refused(r, 3, "<stdin>:1:80: JSON nesting deeper", "deep session on stdin");
  // And in a step's params.
  json s = {{"lli_session", 1}, {"current", nullptr}, {"steps", json::array()}};
  std::string text = s.dump();
  text.insert(text.size() - 1, ", \"chat\": " + nested_arrays(100000));
  write_bytes(t / "s2.json", text);
  r = run("lli-segment --backend grabcut --session s2.json --point 1,1 -o out.png", t);
  check_refused(r, 3, "s2.json:1:", "deep chat array");
  CHECK(!fs::exists(t / "out.png"));
}

TEST_CASE("cli hardening: deep nesting in a checkpoint (safetensors shape, config.yaml) is exit 4, one line") {
  TempDir t;
  write_ball_mask(t / "m.png");
  // generator.safetensors whose first tensor has a 300,000-deep shape.
  fs::path ck = copy_lama(t / "deep-shape");
  std::string header = "{\"w\": {\"dtype\": \"F32\", \"shape\": " + nested_arrays(300000) + ", \"data_offsets\": [0, 4]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_bytes(ck / "generator.safetensors", len + header + std::string(4, '\0'));
  Run r = run("lli-edit remove -q --backend lama -m " + q(ck) + " -i " + sample("messi5.jpg") + " --mask m.png -o out.png", t);
  check_refused(r, 4, "generator.safetensors: JSON nesting deeper than 64 levels", "deep safetensors shape");
  CHECK(!fs::exists(t / "out.png"));

  // config.yaml nested 100,000 deep.
  fs::path cy = copy_lama(t / "deep-yaml");
  write_bytes(cy / "config.yaml", "generator: " + nested_arrays(100000) + "\n");
  r = run("lli-edit remove -q --backend lama -m " + q(cy) + " -i " + sample("messi5.jpg") + " --mask m.png -o out.png", t);
  check_refused(r, 4, "config.yaml:1:", "deep config.yaml");
  CHECK(r.err.find("YAML nesting deeper than 64 levels") != std::string::npos);
  CHECK(!fs::exists(t / "out.png"));
}

TEST_CASE("cli hardening: a deeply nested prompt file is exit 3 naming it") {
  TempDir t;
  write_bytes(t / "p.json", "{\"points\": " + nested_arrays(300000) + "}");
  Run r = run("lli-segment --backend grabcut -i " + sample("messi5.jpg") + " --prompt p.json -o out.png", t);
  check_refused(r, 3, "p.json:1:75: JSON nesting deeper than 64 levels", "deep prompt");
  CHECK(!fs::exists(t / "out.png"));
}

TEST_CASE("cli hardening: duplicate keys in prompt and session JSON, and an empty prompt file, are exit 3") {
  TempDir t;
  write_ball_mask(t / "m.png");
  write_bytes(t / "dup.json", R"({"points": [{"x": 360, "y": 310}], "points": [{"x": 1, "y": 1}]})");
  Run r = run("lli-segment -q --backend grabcut -i " + sample("messi5.jpg") + " --prompt dup.json -o out.png", t);
  check_refused(r, 3, "dup.json:1:", "duplicate prompt key");
  CHECK(r.err.find("duplicate key 'points' (top level)") != std::string::npos);
  write_bytes(t / "empty.json", "{}");
  r = run("lli-segment -q --backend grabcut -i " + sample("messi5.jpg") + " --prompt empty.json -o out.png", t);
  check_refused(r, 3, "empty.json: the prompt file is empty", "empty prompt file");
  CHECK(!fs::exists(t / "out.png"));

  // A valid session, then the same with "current" given twice.
  r = run("lli-edit remove -q --backend telea -i " + sample("messi5.jpg") + " --mask m.png --session s.json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  std::string text = slurp(t / "s.json");
  const std::string before = text;
  text.insert(text.find("\"current\""), "\"current\": 0, ");
  write_bytes(t / "s.json", text);
  r = run("lli-edit remove -q --backend telea --mask m.png --session s.json", t);
  check_refused(r, 3, "s.json:", "duplicate session key");
  CHECK(r.err.find("duplicate key 'current' (top level)") != std::string::npos);
}

TEST_CASE("cli hardening: 8 rounds of two concurrent lli-edit on one session record every step, no orphan") {
  TempDir t;
  write_ball_mask(t / "m.png");
  Run r = run("lli-edit remove -q --backend telea -i " + sample("messi5.jpg") + " --mask m.png --session s.json", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const std::string one = "lli-edit remove -q --backend telea --mask m.png --session s.json --json";
  for (int round = 0; round < 8; ++round) {
    r = run("(" + one + " > a.out 2> a.err; echo $? > a.rc) & (" + one + " > b.out 2> b.err; echo $? > b.rc) & wait", t);
    INFO("round " << round << "\n" << slurp(t / "a.err") << slurp(t / "b.err"));
    CHECK(slurp(t / "a.rc") == "0\n");
    CHECK(slurp(t / "b.rc") == "0\n");
    // Each reports the step index it really got.
    const int sa = json::parse(slurp(t / "a.out"))["step"], sb = json::parse(slurp(t / "b.out"))["step"];
    CHECK(sa != sb);
    CHECK(std::max(sa, sb) == 2 + 2 * round + 1);
  }
  const json s = json::parse(slurp(t / "s.json"));
  REQUIRE(s["steps"].size() == 2 + 16);
  std::set<std::string> recorded;
  for (const auto& st : s["steps"]) recorded.insert(st["file"].get<std::string>());
  std::set<std::string> on_disk;
  for (const auto& e : fs::directory_iterator(t.path)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0) on_disk.insert(name);
    CHECK_MESSAGE(name.find(".tmp-") == std::string::npos, name);
  }
  CHECK(on_disk == recorded);  // every image on disk is a recorded step
  CHECK(recorded.size() == 18);
  CHECK(s["current"].get<int>() == 17);
  for (std::size_t i = 2; i < s["steps"].size(); ++i) CHECK(s["steps"][i]["parent"].get<int>() >= 1);
}

TEST_CASE("cli hardening: truncated images are exit 3 with one line, --allow-truncated accepts a cut JPEG with a warning") {
  TempDir t;
  const std::string full = slurp(lli::test::samples_dir() / "messi5.jpg");
  write_bytes(t / "cut.jpg", full.substr(0, full.size() / 2));
  write_ball_mask(t / "m.png");
  // Every tool's image path refuses it.
  Run r = run("lli-edit remove --backend telea -i cut.jpg --mask m.png -o out.png", t);
  check_refused(r, 3, "cut.jpg: truncated image data (JPEG ends after 36468 bytes", "cut JPEG, lli-edit");
  r = run("lli-segment --backend grabcut -i cut.jpg --point 360,310 -o out.png", t);
  check_refused(r, 3, "cut.jpg: truncated image data", "cut JPEG, lli-segment");
  CHECK(!fs::exists(t / "out.png"));
  // As a mask too.
  r = run("lli-edit remove --backend telea -i " + sample("messi5.jpg") + " --mask cut.jpg -o out.png", t);
  check_refused(r, 3, "cut.jpg: truncated image data", "cut JPEG as a mask");
  // Accepted with the flag: exit 0, one warning line naming the file.
  r = run("lli-edit remove --backend telea -i cut.jpg --mask m.png -o out.png --allow-truncated", t);
  CHECK_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("warning: cut.jpg: truncated image data (JPEG ends after 36468 bytes") != std::string::npos);
  CHECK(r.err.find("decoded anyway (--allow-truncated)") != std::string::npos);
  CHECK(fs::exists(t / "out.png"));
  // A truncated PNG: libpng's own line does not appear, lli's error carries it.
  cv::Mat img = cv::imread((lli::test::samples_dir() / "messi5.jpg").string());
  std::vector<unsigned char> png;
  REQUIRE(cv::imencode(".png", img, png));
  write_bytes(t / "cut.png", std::string(png.begin(), png.end()).substr(0, png.size() - 100));
  r = run("lli-segment --backend grabcut -i cut.png --point 360,310 -o out2.png --allow-truncated", t);
  check_refused(r, 3, "cut.png: cannot decode PNG image 548x342 (corrupt or truncated data; libpng error:", "cut PNG");
  CHECK(r.err.find("\nlibpng") == std::string::npos);
  CHECK(r.err.rfind("libpng", 0) != 0);
  CHECK(!fs::exists(t / "out2.png"));
}

TEST_CASE("cli hardening: a newline in a prompt label, a tensor name or a file name never splits the error line") {
  TempDir t;
  write_bytes(t / "p.json", R"({"points": [{"x": 360, "y": 310, "label": "pos\nitive"}]})");
  Run r = run("lli-segment -q --backend grabcut -i " + sample("messi5.jpg") + " --prompt p.json -o out.png", t);
  check_refused(r, 3, "p.json: points[0].label: unknown label 'pos\\nitive'", "label with a newline");
  // An image whose name holds a newline.
  r = run("lli-segment -q --backend grabcut -i $'no\\nsuch.jpg' --point 1,1 -o out.png", t);
  check_refused(r, 3, "no\\nsuch.jpg", "file name with a newline");
  // A LaMa checkpoint whose first tensor is renamed "<name>\nINJECTED": missing + unexpected key, one line.
  fs::path ck = copy_lama(t / "renamed");
  std::string bytes = slurp(ck / "generator.safetensors");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  std::string header = bytes.substr(8, n);
  std::size_t name_start = header.find('"') + 1;
  if (header.compare(name_start, 12, "__metadata__") == 0) name_start = header.find("},\"", name_start) + 3;
  const std::size_t name_end = header.find('"', name_start);
  header.insert(name_end, "\\nINJECTED");
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_bytes(ck / "generator.safetensors", len + header + bytes.substr(8 + n));
  write_ball_mask(t / "m.png");
  r = run("lli-edit remove -q --backend lama -m " + q(ck) + " -i " + sample("messi5.jpg") + " --mask m.png -o out.png", t);
  check_refused(r, 4, "\\nINJECTED", "tensor name with a newline");
  CHECK(r.err.find("checkpoint does not match the model") != std::string::npos);
  CHECK(!fs::exists(t / "out.png"));
}
