// Runs the real lli executables from the CLI tests (torch-free).
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "test_util.h"

namespace lli::test {

struct Run {
  int code = -1;
  std::string out, err;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline std::string bin(const std::string& tool) { return (std::filesystem::path(LLI_BIN_DIR) / tool).string(); }

// Runs `cmd` with bash in the temp dir `t`, stdin from `stdin_file` (default /dev/null), with
// LLI_CONFIG set to the source tree's models.yaml. Tool names (lli-segment, lli-edit, lli-chat,
// lli-generate, lli-quantize) at the start of a word are replaced by their built paths.
inline Run run(const std::string& cmd, const TempDir& t, const std::string& stdin_file = "") {
  std::string c = " " + cmd + " ";
  for (const char* tool : {"lli-segment", "lli-edit", "lli-chat", "lli-generate", "lli-quantize"}) {
    for (const char* before : {" ", "|", "(", "\""}) {
      const std::string from = std::string(before) + tool + " ";
      const std::string to = std::string(before) + bin(tool) + " ";
      for (std::size_t pos = 0; (pos = c.find(from, pos)) != std::string::npos; pos += to.size())
        c.replace(pos, from.size(), to);
    }
  }
  const auto out = t / ".stdout", err = t / ".stderr", script = t / ".cmd.sh";
  std::ofstream(script) << "cd '" << t.path.string() << "'\n"
                        << "export LLI_CONFIG='" << LLI_SAMPLES << "/../configs/models.yaml'\n"
                        << "( " << c << " ) " << (stdin_file.empty() ? "< /dev/null" : "< '" + stdin_file + "'")
                        << " > '" << out.string() << "' 2> '" << err.string() << "'\n";
  const int status = std::system(("bash '" + script.string() + "'").c_str());
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace lli::test
