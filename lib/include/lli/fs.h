// Files: atomic writes (temp file in the target directory, then rename), whole-file reads,
// interruption (Ctrl-C stops between steps and leaves no partial file), sha256.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lli {

namespace fs = std::filesystem;

// Reads a whole file ("-" = stdin). Throws InputError naming the file.
std::string read_file(const std::string& path, std::uint64_t max_bytes = UINT64_MAX);
std::string fmt_size_error(const std::string& path, std::uint64_t size, std::uint64_t max);

// An output written to "<dir>/.<name>.tmp-XXXXXX" and renamed over `path` on commit().
// Destroyed without commit() (error, exception, Ctrl-C) the temp file is removed.
// The temp path is registered so that a signal handler can unlink it too.
class AtomicFile {
 public:
  explicit AtomicFile(fs::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::string_view bytes);  // append
  void commit();                       // fsync, rename over the target
  const fs::path& temp_path() const { return tmp_; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  fs::path tmp_;
  int fd_ = -1;
  bool done_ = false;
};

// Writes bytes atomically to `path`; "-" writes to stdout.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Refuses to write over an input unless `overwrite` (InputError).
void check_not_overwriting(const fs::path& out, const std::vector<fs::path>& inputs, bool overwrite);

// Ctrl-C / SIGTERM: install_signal_handlers() once in main; long loops call check_interrupted(),
// which throws InterruptedError once a signal arrived. A second signal exits at once (130)
// after unlinking every pending temp file.
void install_signal_handlers();
bool interrupted();
void check_interrupted();
void request_interrupt();          // for tests
void reset_interrupt_for_tests();  // for tests

// Hex sha256 of bytes / of a file.
std::string sha256_hex(std::string_view bytes);
std::string sha256_file(const fs::path& path);

}  // namespace lli
