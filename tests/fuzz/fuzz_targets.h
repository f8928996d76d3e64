// lli's fuzz targets: each runs arbitrary bytes through the code a tool runs on an untrusted file.
// The same entry points serve the libFuzzer binaries (tests/fuzz/fuzz_main.cpp, built by
// scripts/fuzz.sh with -fsanitize=fuzzer,address,undefined) and the regression replay in the
// normal test suite (tests/unit/test_fuzz_regressions.cpp runs every file of
// tests/data/fuzz/<target>/ through run_one).
//
// lli::Error (InputError, ModelError, ...) is the expected answer to bad input and is swallowed;
// anything else escaping (another exception type), a crash, a hang or a sanitizer report is a
// finding. Torch-free: only lli_base.
#pragma once

#include <string_view>
#include <vector>

namespace lli::fuzz {

struct Target {
  const char* name;
  void (*run)(std::string_view data);
  const char* what;  // one line for scripts/fuzz.sh --list and the docs
};

// Every target, in a fixed order.
const std::vector<Target>& targets();
// nullptr when there is no such target.
const Target* find_target(std::string_view name);
// target.run(data), lli::Error swallowed.
void run_one(const Target& target, std::string_view data);

}  // namespace lli::fuzz
