// Helpers shared by the test executables (torch-free).
#pragma once

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

namespace lli::test {

namespace fs = std::filesystem;

inline fs::path fixtures_dir() { return fs::path(LLI_TEST_FIXTURES); }
inline fs::path samples_dir() { return fs::path(LLI_SAMPLES); }
// ../shared beside the project; $LLI_SHARED overrides. Empty when absent.
inline fs::path shared_dir() {
  if (const char* e = std::getenv("LLI_SHARED")) return fs::path(e);
  fs::path p(LLI_TEST_SHARED);
  std::error_code ec;
  return fs::is_directory(p, ec) ? fs::canonical(p) : fs::path();
}

// The message of the E that f throws, or "<no error>".
template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no error>";
}

inline bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

// A fresh temporary directory removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("lli-test-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(const std::string& s) const { return path / s; }
};

}  // namespace lli::test

// Skips the current test case with a printed reason (doctest 2.4 has no skip at run time).
#define LLI_SKIP(reason)                                 \
  do {                                                   \
    MESSAGE("SKIPPED: " << reason);                      \
    return;                                              \
  } while (0)
