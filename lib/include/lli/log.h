// Logging and progress on stderr. Results go to stdout, never through here.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <functional>
#include <string>

namespace lli {

enum class LogLevel { quiet = 0, info = 1, debug = 2 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const std::string& msg);

template <typename... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() >= LogLevel::info) log_line(LogLevel::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() >= LogLevel::debug) log_line(LogLevel::debug, fmt::format(f, std::forward<Args>(args)...));
}

// Progress bars are drawn only when stderr is a terminal, or when forced (--progress),
// and never with --quiet.
void set_progress_mode(bool force);
bool progress_enabled();

class Progress {
 public:
  Progress(std::string label, long total);
  ~Progress();
  void update(long done);
  void finish();

 private:
  std::string label_;
  long total_;
  long done_ = 0;
  bool active_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

// Runs f with the process's stderr (fd 2) sent to a buffer and returns what was written there:
// the lines C libraries print on their own (libpng, libjpeg), for the caller to route through
// lli's messages as one line. lli's own log lines wait meanwhile.
std::string capture_stderr(const std::function<void()>& f);

// Milliseconds since an arbitrary epoch, for timings.
double now_ms();

}  // namespace lli
