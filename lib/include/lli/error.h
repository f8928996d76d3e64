// Typed errors of the lli library. Every tool catches lli::Error once in main and exits with
// the error's code; messages are one line naming the file/tensor/value and the problem.
#pragma once

#include <stdexcept>
#include <string>

namespace lli {

// Documented exit codes (README "Exit codes").
enum class ExitCode : int {
  ok = 0,
  usage = 2,        // bad flags or arguments
  bad_input = 3,    // image, prompt, session or mask file that cannot be used
  model = 4,        // missing or invalid checkpoint, backend not available
  runtime = 5,      // out of memory, I/O failure while writing, internal errors
  interrupted = 130 // SIGINT / SIGTERM
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

struct UsageError : Error {
  explicit UsageError(const std::string& m) : Error(ExitCode::usage, m) {}
};
struct InputError : Error {
  explicit InputError(const std::string& m) : Error(ExitCode::bad_input, m) {}
};
struct ModelError : Error {
  explicit ModelError(const std::string& m) : Error(ExitCode::model, m) {}
};
struct RuntimeError : Error {
  explicit RuntimeError(const std::string& m) : Error(ExitCode::runtime, m) {}
};
struct InterruptedError : Error {
  InterruptedError() : Error(ExitCode::interrupted, "interrupted") {}
};

}  // namespace lli
