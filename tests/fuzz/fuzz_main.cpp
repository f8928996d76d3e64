// One libFuzzer binary per target (LLI_FUZZ_TARGET names it; tests/fuzz/CMakeLists.txt).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "fuzz/fuzz_targets.h"
#include "lli/log.h"

namespace {
const lli::fuzz::Target& target() {
  static const lli::fuzz::Target* t = [] {
    const auto* found = lli::fuzz::find_target(LLI_FUZZ_TARGET);
    if (!found) {
      std::fprintf(stderr, "no fuzz target %s\n", LLI_FUZZ_TARGET);
      std::abort();
    }
    return found;
  }();
  return *t;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  lli::set_log_level(lli::LogLevel::quiet);  // log lines are not findings
  // Loads what the target keeps between runs (the tokenizers' vocabularies) before libFuzzer
  // starts timing runs: under ASan that takes seconds.
  lli::fuzz::run_one(target(), {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  lli::fuzz::run_one(target(), std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
