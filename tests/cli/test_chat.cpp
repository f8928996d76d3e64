// lli-chat CLI tests: the real executable on the llava-tiny-a fixture (greedy golden tokens, streaming,
// stdin, sessions with edits, batch, interactive mode, YAML defaults, errors).
#include <sys/wait.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "lli/safetensors.h"
#include "cli/cli_run.h"

using lli::test::TempDir;
using lli::test::Run;
using lli::test::run;
using lli::test::slurp;
using lli::test::bin;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {


fs::path llava_dir() { return lli::test::fixtures_dir() / "llava-tiny-a"; }
std::string model_flag() { return "-m '" + llava_dir().string() + "'"; }
std::string fixture_image() { return "'" + (llava_dir() / "image.png").string() + "'"; }
// Greedy, f32 (the fixture's goldens are fp32), 16 tokens.
const char* kGreedy = " --temperature 0 --max-new-tokens 16 --dtype f32 ";

std::vector<std::int64_t> golden_generated_ids() {
  auto file = lli::st::File::open(llava_dir() / "golden.safetensors");
  for (const auto& t : file.tensors()) {
    if (t.name != "generated_ids") continue;
    REQUIRE(t.dtype == lli::st::DType::I64);
    std::vector<std::int64_t> out(t.nbytes / sizeof(std::int64_t));
    std::memcpy(out.data(), t.data, t.nbytes);
    return out;
  }
  FAIL("golden.safetensors has no generated_ids");
  return {};
}

std::string golden_text() {
  std::ifstream f(llava_dir() / "case.json");
  return json::parse(f)["generated_text"].get<std::string>();
}

std::vector<json> json_lines(const std::string& s) {
  std::vector<json> out;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

bool no_temp_files(const fs::path& dir) {
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".lli-tmp-") != std::string::npos) return false;
  return true;
}

}  // namespace

TEST_CASE("cli chat: --json --temperature 0 on llava-tiny-a prints exactly the 16 golden tokens") {
  TempDir t;
  Run r = run("lli-chat " + model_flag() + " -i " + fixture_image() + " 'What is shown?' --json" + kGreedy, t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  REQUIRE(count_lines(r.out) == 1);
  json j = json::parse(r.out);
  CHECK(j["tokens"].get<std::vector<std::int64_t>>() == golden_generated_ids());
  CHECK(j["text"] == golden_text());
  CHECK(j["n_prompt_tokens"] == 32);  // BOS + "USER: <image>\nWhat is shown? ASSISTANT:" with 16 image tokens
  CHECK(j["finish_reason"] == "length");
  for (const char* k : {"load_ms", "prefill_ms", "decode_ms", "decode_tokens_per_s"}) {
    INFO(k);
    REQUIRE(j["timings"].contains(k));
    CHECK(j["timings"][k].get<double>() >= 0);
  }
  CHECK(j["timings"]["decode_tokens_per_s"].get<double>() > 0);
  // --weights auto says where the weights went, in one line; nothing else on stderr.
  CHECK(j["weights"]["residency"] == "copy");  // a tiny model always fits
  CHECK(j["weights"]["format"] == "f32");
  CHECK_MESSAGE(r.err.rfind("weights: copy into huge-page memory (", 0) == 0, r.err);
  CHECK(count_lines(r.err) == 1);
}

TEST_CASE("cli chat: --weights mmap and copy give the same tokens, and a bad --weights is a usage error") {
  TempDir t;
  for (const char* w : {"mmap", "copy"}) {
    CAPTURE(w);
    Run r = run("lli-chat " + model_flag() + " -i " + fixture_image() + " 'What is shown?' --json --weights " + w +
                    kGreedy,
                t);
    REQUIRE_MESSAGE(r.code == 0, r.err);
    json j = json::parse(r.out);
    CHECK(j["tokens"].get<std::vector<std::int64_t>>() == golden_generated_ids());
    CHECK(j["weights"]["residency"] == w);
    CHECK_MESSAGE(r.err.empty(), r.err);  // an explicit choice is not announced
  }
  Run bad = run("lli-chat " + model_flag() + " -i " + fixture_image() + " 'What?' --weights huge" + kGreedy, t);
  CHECK(bad.code == 2);
  CHECK_MESSAGE(bad.err.find("--weights") != std::string::npos, bad.err);
}

TEST_CASE("cli chat: streamed text equals the --json text, and the question can come from stdin") {
  TempDir t;
  Run r = run("lli-chat " + model_flag() + " -i " + fixture_image() + " 'What is shown?'" + kGreedy, t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.out == golden_text() + "\n");

  std::ofstream(t / "q.txt") << "What is shown?\n";
  Run s = run("lli-chat " + model_flag() + " -i " + fixture_image() + " --json" + kGreedy, t, (t / "q.txt").string());
  REQUIRE_MESSAGE(s.code == 0, s.err);
  CHECK(json::parse(s.out)["tokens"].get<std::vector<std::int64_t>>() == golden_generated_ids());
  Run p = run("echo 'What is shown?' | lli-chat " + model_flag() + " -i " + fixture_image() + kGreedy, t);
  REQUIRE_MESSAGE(p.code == 0, p.err);
  CHECK(p.out == golden_text() + "\n");

  // The image on stdin needs the question as an argument; an empty stdin question is a usage error.
  Run u = run("cat " + fixture_image() + " | lli-chat " + model_flag() + " -i -" + kGreedy, t);
  CHECK(u.code == 2);
  std::ofstream(t / "empty.txt") << "  \n";
  Run e = run("lli-chat " + model_flag() + " -i " + fixture_image() + kGreedy, t, (t / "empty.txt").string());
  CHECK(e.code == 2);
  CHECK(e.err.find("question") != std::string::npos);
}

TEST_CASE("cli chat: sessions keep the chat per step, and an edit starts a new conversation on the edited image") {
  TempDir t;
  const std::string chat = "lli-chat " + model_flag() + " --session s.json --json" + kGreedy;
  Run r1 = run(chat + " -i " + fixture_image() + " 'What is shown?'", t);
  REQUIRE_MESSAGE(r1.code == 0, r1.err);
  json a1 = json::parse(r1.out);
  CHECK(a1["step"] == 0);
  CHECK(a1["tokens"].get<std::vector<std::int64_t>>() == golden_generated_ids());
  Run r2 = run(chat + " 'What else?'", t);
  REQUIRE_MESSAGE(r2.code == 0, r2.err);
  json a2 = json::parse(r2.out);
  CHECK(a2["step"] == 0);
  // The first exchange is context: the prompt holds it (32 prompt + 16 answer tokens at least).
  CHECK(a2["n_prompt_tokens"].get<int>() > 32 + 16);

  json s = json::parse(slurp(t / "s.json"));
  REQUIRE(s["chat"].size() == 4);
  CHECK(s["chat"][0]["role"] == "user");
  CHECK(s["chat"][0]["text"] == "What is shown?");
  CHECK(s["chat"][1]["role"] == "assistant");
  CHECK(s["chat"][1]["text"] == golden_text());
  CHECK(s["chat"][2]["text"] == "What else?");
  CHECK(s["chat"][3]["text"] == a2["text"]);
  for (const auto& turn : s["chat"]) CHECK(turn["step"] == 0);

  // Edit the image (remove a square), then ask: step 1, a fresh conversation (same prompt size as
  // the very first question), its turns recorded with step 1.
  cv::Mat img = cv::imread((llava_dir() / "image.png").string());
  cv::Mat mask = cv::Mat::zeros(img.size(), CV_8UC1);
  cv::rectangle(mask, {10, 10}, {30, 30}, 255, -1);
  cv::imwrite((t / "mask.png").string(), mask);
  Run ed = run("lli-edit remove --session s.json --mask mask.png", t);
  REQUIRE_MESSAGE(ed.code == 0, ed.err);
  Run r3 = run(chat + " 'What is shown?'", t);
  REQUIRE_MESSAGE(r3.code == 0, r3.err);
  json a3 = json::parse(r3.out);
  CHECK(a3["step"] == 1);
  CHECK(a3["n_prompt_tokens"] == 32);
  s = json::parse(slurp(t / "s.json"));
  REQUIRE(s["chat"].size() == 6);
  CHECK(s["chat"][4]["step"] == 1);
  CHECK(s["chat"][5]["step"] == 1);

  // --from-step 0 goes back to the first conversation (its two exchanges are context again).
  Run r4 = run(chat + " --from-step 0 'And now?'", t);
  REQUIRE_MESSAGE(r4.code == 0, r4.err);
  json a4 = json::parse(r4.out);
  CHECK(a4["step"] == 0);
  CHECK(a4["n_prompt_tokens"].get<int>() > a2["n_prompt_tokens"].get<int>() + 1);

  // --session -: the session on stdout, the answer on stderr.
  Run r5 = run("cat s.json | lli-chat " + model_flag() + " --session - --session-dir ." + kGreedy + " 'Why?' > s2.json",
               t);
  REQUIRE_MESSAGE(r5.code == 0, r5.err);
  json s2 = json::parse(slurp(t / "s2.json"));
  REQUIRE(s2["chat"].size() == 10);
  CHECK(s2["chat"][9]["role"] == "assistant");
  CHECK(r5.err.find(s2["chat"][9]["text"].get<std::string>()) != std::string::npos);
  CHECK(no_temp_files(t.path));
}

TEST_CASE("cli chat: batch over a directory with --json and --outdir, resumable") {
  TempDir t;
  fs::create_directories(t / "in");
  fs::copy_file(llava_dir() / "image.png", t / "in" / "a.png");
  cv::Mat img = cv::imread((llava_dir() / "image.png").string()), flipped;
  cv::flip(img, flipped, 0);
  cv::imwrite((t / "in" / "b.png").string(), flipped);
  std::ofstream(t / "in" / "c.png") << "not a png";
  const std::string cmd = "lli-chat " + model_flag() + " -i in 'What is shown?' --outdir out --json" + std::string(kGreedy);
  Run r = run(cmd, t);
  CHECK(r.code == 3);  // c.png is not an image; the others are still answered
  auto lines = json_lines(r.out);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0]["status"] == "ok");
  CHECK(lines[0]["tokens"].get<std::vector<std::int64_t>>() == golden_generated_ids());
  CHECK(lines[1]["status"] == "ok");
  CHECK(lines[2]["status"] == "error");
  CHECK(slurp(t / "out" / "a.txt") == golden_text() + "\n");
  CHECK(slurp(t / "out" / "b.txt") == lines[1]["text"].get<std::string>() + "\n");
  CHECK_FALSE(fs::exists(t / "out" / "c.txt"));

  fs::remove(t / "in" / "c.png");
  Run again = run(cmd, t);
  CHECK(again.code == 0);
  for (const auto& l : json_lines(again.out)) CHECK(l["status"] == "skipped");
  // Batch without --outdir or without a question is a usage error.
  CHECK(run("lli-chat " + model_flag() + " -i in 'What is shown?'" + kGreedy, t).code == 2);
  CHECK(run("lli-chat " + model_flag() + " -i in --outdir out" + kGreedy, t).code == 2);
}

TEST_CASE("cli chat: --interactive reads questions and commands from stdin") {
  TempDir t;
  std::ofstream(t / "in.txt") << "What is shown?\n"
                                 "What else?\n"
                                 "/save conv.json\n"
                                 "/bogus\n"
                                 "/reset\n"
                                 "What is shown?\n"
                                 "/image missing.png\n"
                                 "/image "
                              << (llava_dir() / "image.png").string()
                              << "\n"
                                 "What is shown?\n"
                                 "/quit\n"
                                 "never asked\n";
  Run r = run("lli-chat " + model_flag() + " -i " + fixture_image() + " --interactive --json" + kGreedy, t,
              (t / "in.txt").string());
  REQUIRE_MESSAGE(r.code == 0, r.err);
  auto answers = json_lines(r.out);
  REQUIRE(answers.size() == 4);
  const auto golden = golden_generated_ids();
  CHECK(answers[0]["tokens"].get<std::vector<std::int64_t>>() == golden);
  CHECK(answers[1]["n_reused_tokens"].get<int>() > 32);  // the cache carried the first exchange
  CHECK(answers[2]["tokens"].get<std::vector<std::int64_t>>() == golden);  // after /reset
  CHECK(answers[2]["n_reused_tokens"] == 31);                               // same prompt: all but its last token
  CHECK(answers[3]["tokens"].get<std::vector<std::int64_t>>() == golden);  // after /image: a fresh start
  CHECK(answers[3]["n_reused_tokens"] == 0);
  CHECK(r.err.find("unknown command /bogus") != std::string::npos);
  CHECK(r.err.find("missing.png") != std::string::npos);

  json conv = json::parse(slurp(t / "conv.json"));
  REQUIRE(conv["turns"].size() == 4);
  CHECK(conv["turns"][0]["role"] == "user");
  CHECK(conv["turns"][0]["text"] == "What is shown?");
  CHECK(conv["turns"][1]["text"] == golden_text());
  CHECK(conv["turns"][3]["text"] == answers[1]["text"]);

  // Without --json the answers stream as text lines.
  std::ofstream(t / "in2.txt") << "What is shown?\n";
  Run s = run("lli-chat " + model_flag() + " -i " + fixture_image() + " --interactive -q" + kGreedy, t,
              (t / "in2.txt").string());
  REQUIRE_MESSAGE(s.code == 0, s.err);
  CHECK(s.out == golden_text() + "\n");
}

TEST_CASE("cli chat: a terminal on stdin without a question starts the interactive chat") {
  TempDir t;
  if (std::system("script --version > /dev/null 2>&1") != 0) LLI_SKIP("util-linux script is not installed");
  // script runs lli-chat on a pseudo-terminal; the question and /quit are typed into it.
  std::ofstream(t / "typed.txt") << "What is shown?\n/quit\n";
  Run r = run("script -qec \"lli-chat " + model_flag() + " -i " + fixture_image() + " -q" + kGreedy +
                  "\" /dev/null",
              t, (t / "typed.txt").string());
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.out.find(golden_text()) != std::string::npos);
}

TEST_CASE("cli chat: YAML defaults are overridden by flags, and --image-aspect pad runs") {
  TempDir t;
  std::ofstream(t / "models.yaml") << "tools:\n  lli-chat:\n    temperature: 0\n    max_new_tokens: 3\n";
  const std::string base = "lli-chat --config models.yaml " + model_flag() + " -i " + fixture_image() + " --dtype f32 --json ";
  Run r = run(base + "'What is shown?'", t);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto golden = golden_generated_ids();
  CHECK(json::parse(r.out)["tokens"].get<std::vector<std::int64_t>>() ==
        std::vector<std::int64_t>(golden.begin(), golden.begin() + 3));
  Run r5 = run(base + "--max-new-tokens 5 'What is shown?'", t);
  REQUIRE_MESSAGE(r5.code == 0, r5.err);
  CHECK(json::parse(r5.out)["tokens"].size() == 5);
  Run pad = run(base + "--image-aspect pad 'What is shown?'", t);
  REQUIRE_MESSAGE(pad.code == 0, pad.err);
  CHECK(json::parse(pad.out)["tokens"].size() == 3);
}

TEST_CASE("cli chat: bad checkpoints exit 4, bad images 3, bad flags 2, each with one line") {
  TempDir t;
  fs::create_directories(t / "empty-ckpt");
  fs::create_directories(t / "no-weights");
  for (const char* f : {"config.json", "tokenizer.model", "tokenizer_config.json", "preprocessor_config.json",
                        "special_tokens_map.json", "added_tokens.json"})
    fs::copy_file(llava_dir() / f, t / "no-weights" / f);
  std::ofstream(t / "fake.png") << "not an image";
  const std::string img = fixture_image();
  struct Case {
    std::string cmd;
    int code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"lli-chat -m empty-ckpt -i " + img + " 'q?'", 4, "empty-ckpt"},
      {"lli-chat -m no-weights -i " + img + " 'q?'", 4, "no-weights"},
      {"lli-chat -m /nonexistent/ckpt -i " + img + " 'q?'", 4, "/nonexistent/ckpt"},
      {"lli-chat " + model_flag() + " -i fake.png 'q?'", 3, "fake.png"},
      {"lli-chat " + model_flag() + " -i " + img + " --image-aspect stretch 'q?'", 2, "stretch"},
      {"lli-chat " + model_flag() + " -i " + img + " --temperature -1 'q?'", 2, "temperature"},
      {"lli-chat " + model_flag() + " -i " + img + " --top-p 0 'q?'", 2, "top_p"},
      {"lli-chat " + model_flag() + " -i " + img + " -o out.txt 'q?'", 2, "-o"},
      {"lli-chat " + model_flag() + " 'q?'", 2, "image"},
      {"lli-chat " + model_flag() + " -i " + img + " --interactive 'q?'", 2, "interactive"},
  };
  for (const auto& c : cases) {
    Run r = run(c.cmd, t);
    CHECK_MESSAGE(r.code == c.code, c.cmd << "\n" << r.err);
    CHECK_MESSAGE(r.err.find(c.needle) != std::string::npos, c.cmd << "\n" << r.err);
    CHECK_MESSAGE(count_lines(r.err) <= 2, c.cmd << "\n" << r.err);
    CHECK_MESSAGE(r.out.empty(), c.cmd << "\n" << r.out);
  }
  CHECK(no_temp_files(t.path));
}

TEST_CASE("cli chat: --prompt-cache reuses the image tokens with the same answer, not for another image") {
  TempDir t;
  const std::string cache = "'" + (t.path / "photo.kv").string() + "'";
  const std::string base = "lli-chat " + model_flag() + " -i " + fixture_image() + kGreedy + " --json --prompt-cache " + cache;
  Run r1 = run(base + " 'What is shown?'", t);
  REQUIRE_MESSAGE(r1.code == 0, r1.err);
  CHECK(json::parse(r1.out)["n_reused_tokens"] == 0);
  REQUIRE(fs::exists(t.path / "photo.kv"));
  CHECK(no_temp_files(t.path));
  // A second question on the same image: the shared prefix (image included) comes from the cache,
  // and the answer equals the golden greedy answer of an uncached run.
  Run r2 = run(base + " 'What is shown?'", t);
  REQUIRE_MESSAGE(r2.code == 0, r2.err);
  json j2 = json::parse(r2.out);
  CHECK(j2["n_reused_tokens"].get<std::int64_t>() > 0);
  CHECK(j2["n_reused_tokens"].get<std::int64_t>() < j2["n_prompt_tokens"].get<std::int64_t>());
  CHECK(j2["tokens"].get<std::vector<std::int64_t>>() == golden_generated_ids());
  CHECK(r2.err.find("prompt cache") != std::string::npos);
  // Another image: the cache is not used (and says why), then overwritten.
  cv::Mat img = cv::imread((llava_dir() / "image.png").string());
  REQUIRE(!img.empty());
  cv::flip(img, img, 1);
  const fs::path other = t.path / "other.png";
  REQUIRE(cv::imwrite(other.string(), img));
  Run r3 = run("lli-chat " + model_flag() + " -i '" + other.string() + "'" + kGreedy + " --json --prompt-cache " + cache +
                   " 'What is shown?'",
               t);
  REQUIRE_MESSAGE(r3.code == 0, r3.err);
  CHECK(json::parse(r3.out)["n_reused_tokens"] == 0);
  CHECK(r3.err.find("another image") != std::string::npos);
  // Not a cache file: refused, not fatal. Batch mode: usage error.
  { std::ofstream(t.path / "junk.kv") << "not safetensors"; }
  Run r4 = run("lli-chat " + model_flag() + " -i " + fixture_image() + kGreedy + " --json --prompt-cache '" +
                   (t.path / "junk.kv").string() + "' 'What is shown?'",
               t);
  REQUIRE_MESSAGE(r4.code == 0, r4.err);
  CHECK(json::parse(r4.out)["tokens"].get<std::vector<std::int64_t>>() == golden_generated_ids());
  Run r5 = run("lli-chat " + model_flag() + " -i '" + t.path.string() + "' 'x' --prompt-cache " + cache, t);
  CHECK(r5.code == 2);
}

TEST_CASE("cli quantize: lli-quantize writes a checkpoint that lli-chat loads, equal to --quantize at load") {
  TempDir t;
  for (const char* type : {"q8_0", "q4_k"}) {
    CAPTURE(type);
    const fs::path out = t.path / (std::string("llava-") + type);
    Run q = run("lli-quantize '" + llava_dir().string() + "' '" + out.string() + "' --type " + type + " --json", t);
    REQUIRE_MESSAGE(q.code == 0, q.err);
    json j = json::parse(q.out);
    CHECK(j["type"] == type);
    CHECK(j["linears"] == 22);  // 3 layers x 7 projections + lm_head
    CHECK(j["bytes_out"].get<double>() < j["bytes_in"].get<double>());
    for (const char* f : {"config.json", "tokenizer.model", "preprocessor_config.json", "model.safetensors.index.json"})
      CHECK_MESSAGE(fs::exists(out / f), f);
    CHECK(no_temp_files(t.path));
    CHECK_FALSE(fs::exists(out.string() + ".tmp-lli-quantize"));
    // The written checkpoint and quantizing at load give the same tokens; --json names the format.
    Run a = run("lli-chat -m '" + out.string() + "' -i " + fixture_image() + " 'What is shown?' --json" + kGreedy, t);
    Run b = run("lli-chat " + model_flag() + " -i " + fixture_image() + " 'What is shown?' --json --quantize " + type +
                    kGreedy,
                t);
    REQUIRE_MESSAGE(a.code == 0, a.err);
    REQUIRE_MESSAGE(b.code == 0, b.err);
    json ja = json::parse(a.out), jb = json::parse(b.out);
    CHECK(ja["tokens"] == jb["tokens"]);
    CHECK(ja["weights"]["format"] == type);
    CHECK(jb["weights"]["format"] == type);
    // Refusals: the output exists, the output is the input, the input is already quantized.
    Run again = run("lli-quantize '" + llava_dir().string() + "' '" + out.string() + "' --type " + type, t);
    CHECK(again.code == 2);
    CHECK_MESSAGE(again.err.find("--overwrite") != std::string::npos, again.err);
    Run same = run("lli-quantize '" + out.string() + "' '" + out.string() + "' --type q8_0 --overwrite", t);
    CHECK(same.code == 2);
    CHECK_MESSAGE(same.err.find("IN_DIR") != std::string::npos, same.err);
    Run twice = run("lli-quantize '" + out.string() + "' '" + (t.path / "x").string() + "' --type q8_0", t);
    CHECK(twice.code == 3);
    CHECK_MESSAGE(twice.err.find("already quantized") != std::string::npos, twice.err);
    CHECK(count_lines(twice.err) == 1);
  }
  Run over = run("lli-quantize '" + llava_dir().string() + "' '" + (t.path / "llava-q8_0").string() +
                     "' --type q4_k --overwrite --json",
                 t);
  REQUIRE_MESSAGE(over.code == 0, over.err);
  CHECK(json::parse(over.out)["type"] == "q4_k");
  Run bad = run("lli-quantize '" + llava_dir().string() + "' '" + (t.path / "y").string() + "' --type q5", t);
  CHECK(bad.code == 2);
  CHECK_FALSE(fs::exists(t.path / "y"));
}
