// lli-chat: talk about an image (LLaVA-1.5). Interface and session plumbing; the model lands with
// the LLaVA issue: until then every question ends with a clear exit-4 error.
#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "common/batch.h"
#include "common/cli.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/image.h"

using namespace lli;
using namespace lli::cli;

namespace {
const char* kExamples = R"(
Examples:
  lli-chat -m llava-1.5-7b -i photo.jpg "What is in this picture?"
  lli-chat -i photo.jpg                       # interactive: /image PATH, /reset, /save FILE, /quit
  echo "describe it" | lli-chat -i photo.jpg  # question from stdin
  lli-chat --session s.json "what is left?"   # about the session's current image
  lli-chat -i photos/ "one-line caption" --json --outdir captions/
Exit codes: 0 ok, 2 usage, 3 bad input, 4 model/backend, 5 runtime, 130 interrupted.)";
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lli-chat: talk about an image (LLaVA-1.5)"};
  app.footer(kExamples);
  CommonOptions o;
  FlagSet fs;
  fs.output = false;
  add_common_flags(app, o, fs);
  std::string question, system_prompt;
  double temperature = -1, top_p = -1;
  int max_new_tokens = -1;
  app.add_option("question", question, "The question (read from stdin when absent and stdin is not a terminal)");
  app.add_option("--system", system_prompt, "System prompt");
  app.add_option("--temperature", temperature, "Sampling temperature (0 = greedy; default 0.2)");
  app.add_option("--top-p", top_p, "Nucleus sampling (default 0.7)");
  app.add_option("--max-new-tokens", max_new_tokens, "Answer length limit (default 512)");

  return run_tool("lli-chat", app, argc, argv, o, [&] {
    apply_runtime_options(o, /*uses_torch=*/false);
    if (is_batch_input(o.image)) {
      if (question.empty()) throw UsageError("batch mode needs the question as an argument");
    } else {
      SessionContext sc(o, "lli-chat");
      if (!sc.active() && o.image.empty()) throw UsageError("no image: pass -i IMAGE or --session FILE");
      if (!sc.active()) (void)read_image(o.image);  // a bad image is reported before the model
    }
    // The model: resolve it (registry name or directory), which explains how to get a missing one.
    ResolvedModel m = require_model(o, "lli-chat");
    no_backend("lli-chat -m " + m.name, "LLaVA support lands with its issue; the checkpoint at " + m.dir.string() +
                                            " cannot be run by this build yet");
  });
}
