// Regression corpus of the fuzz targets (tests/fuzz/fuzz_targets.h): every file under
// tests/data/fuzz/<target>/ (inputs that once crashed, hung or broke an invariant, saved by
// scripts/fuzz.sh, and hand-picked hard cases) is run through the same entry point the fuzzer
// uses. A file passes when the entry point returns (an lli::Error counts as a clean refusal);
// any other exception fails the test, a crash or a sanitizer report fails the run.
#include "test_util.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>

#include "fuzz/fuzz_targets.h"
#include "io/bounded_parse.h"
#include "lli/error.h"
#include "lli/registry.h"

using namespace lli::test;

namespace {

const char* const kCovered[] = {"safetensors", "safetensors_index", "prompt", "session", "registry", "image",
                                "sentencepiece_model", "llama_tokenizer", "clip_tokenizer", "chat_template"};

void replay(const std::string& name) {
  const lli::fuzz::Target* target = lli::fuzz::find_target(name);
  REQUIRE(target != nullptr);
  const fs::path dir = fs::path(LLI_TEST_DATA) / "fuzz" / name;
  std::vector<fs::path> files;
  std::error_code ec;
  if (fs::is_directory(dir, ec))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& f : files) {
    CAPTURE(f.string());
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string data = ss.str();
    CHECK_NOTHROW(lli::fuzz::run_one(*target, data));
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE(name << ": replayed " << files.size() << " files from tests/data/fuzz/" << name << " in " << ms << " ms");
}

}  // namespace

TEST_CASE("fuzz regressions: every fuzz target has a replay case here") {
  std::set<std::string> covered(std::begin(kCovered), std::end(kCovered));
  for (const auto& t : lli::fuzz::targets()) CHECK_MESSAGE(covered.count(t.name) == 1, t.name);
  CHECK(covered.size() == lli::fuzz::targets().size());
}

TEST_CASE("fuzz regressions: safetensors") { replay("safetensors"); }
TEST_CASE("fuzz regressions: safetensors_index") { replay("safetensors_index"); }
TEST_CASE("fuzz regressions: prompt") { replay("prompt"); }
TEST_CASE("fuzz regressions: session") { replay("session"); }
TEST_CASE("fuzz regressions: registry") { replay("registry"); }
TEST_CASE("fuzz regressions: image") { replay("image"); }
TEST_CASE("fuzz regressions: sentencepiece_model") { replay("sentencepiece_model"); }
TEST_CASE("fuzz regressions: llama_tokenizer") { replay("llama_tokenizer"); }
TEST_CASE("fuzz regressions: clip_tokenizer") { replay("clip_tokenizer"); }
TEST_CASE("fuzz regressions: chat_template") { replay("chat_template"); }

// Findings of the fuzz campaign with a named test of their own (the files above replay them too).
TEST_CASE("fuzz finding: YAML whose parser reports endless empty documents (',a') is read in bounded time") {
  // yaml-cpp 0.7 returned true from HandleNextDocument forever for this text; the depth pass of
  // load_yaml_bounded looped over the documents (models.yaml, and LaMa's config.yaml from a checkpoint).
  const auto t0 = std::chrono::steady_clock::now();
  const YAML::Node n = lli::load_yaml_bounded(",a", "config.yaml", lli::ExitCode::model);
  CHECK(n.IsNull());
  CHECK(lli::Registry::parse(",a", "models.yaml").model_names().empty());  // an empty registry
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
}
