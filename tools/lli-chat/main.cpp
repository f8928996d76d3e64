// lli-chat: talk about an image (LLaVA-1.5). Flag parsing, input selection, sessions, batch and
// the interactive loop; the conversation itself is pipelines::ChatSession.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/batch.h"
#include "common/cli.h"
#include "core/activity.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/image.h"
#include "lli/log.h"
#include "pipelines/chat.h"

using namespace lli;
using namespace lli::cli;
using lli::pipelines::ChatAnswer;
using lli::pipelines::ChatExchange;
using lli::pipelines::ChatSession;

namespace {

const char* kExamples = R"(
Examples:
  lli-chat -m llava-1.5-7b -i photo.jpg "What is in this picture?"
  lli-chat -i photo.jpg                       # interactive: /image PATH, /reset, /save FILE, /quit
  echo "describe it" | lli-chat -i photo.jpg  # question from stdin
  lli-chat -i photo.jpg "describe it" --json --temperature 0   # greedy, one JSON object
  lli-chat --session s.json "what is left?"   # about the session's current image, with its chat history
  lli-chat -i photos/ "one-line caption" --json --outdir captions/   # batch: captions/<stem>.txt
  lli-chat -i photo.jpg "what color is the car?" --prompt-cache photo.kv   # later questions on photo.jpg
                                              # reuse its prefilled image tokens from photo.kv
  lli-chat -i photo.jpg "describe it" --weights mmap   # instant load (weights stay in the page cache)
  lli-chat -i photo.jpg "describe it" --quantize q4_k  # 4-bit weights: ~3x faster decoding
  lli-chat -m demo-llava -i scene.png "What shape is the red object?" --temperature 0   # lli's shapes-world demo
Without -m, lli-chat uses models.yaml's model, or lli's shapes-world demo-llava when that is not installed
(it knows only lli-train-demo's synthetic scenes: models/demo-llava/MODEL_CARD.md).
Interactive mode starts when there is no question and stdin is a terminal (--interactive forces it,
reading questions and /commands line by line from stdin).
Defaults (temperature 0.2, top-p 0.7, top-k 50, max-new-tokens 512) come from models.yaml tools.lli-chat.
Exit codes: 0 ok, 2 usage, 3 bad input, 4 model/backend, 5 runtime, 130 interrupted.)";

const char* kInteractiveHelp =
    "commands: /image PATH (new image, new conversation), /reset (forget the conversation), /save FILE "
    "(the conversation as JSON), /quit (or end of input); anything else is a question";

struct ChatFlags {
  std::string question, system, image_aspect, prompt_cache, weights = "auto", quantize;
  bool interactive = false;
  SamplerConfig sampler;
  CLI::Option *temperature = nullptr, *top_p = nullptr, *top_k = nullptr, *repetition_penalty = nullptr,
              *max_new_tokens = nullptr, *system_opt = nullptr, *aspect_opt = nullptr;
};

// --prompt-cache: restores the KV cache saved by an earlier run on the same image and model (the
// next answer prefills only what differs); a cache of another image or model is left alone and
// overwritten by the next save.
void load_prompt_cache(ChatSession& chat, const ChatFlags& f) {
  if (f.prompt_cache.empty() || !fs::exists(f.prompt_cache)) return;
  std::string why;
  if (chat.load_prompt_cache(f.prompt_cache, &why))
    log_info("lli-chat: prompt cache {}: {} tokens", f.prompt_cache, chat.cached_tokens().size());
  else
    log_info("lli-chat: prompt cache not used: {}", why);
}

void save_prompt_cache(const ChatSession& chat, const ChatFlags& f) {
  if (!f.prompt_cache.empty() && chat.save_prompt_cache(f.prompt_cache))
    log_debug("lli-chat: prompt cache {} saved ({} tokens)", f.prompt_cache, chat.cached_tokens().size());
}

// Built-in default < models.yaml tools.lli-chat < command line.
SamplerConfig sampler_config(const CommonOptions& o, const ChatFlags& f) {
  const Registry& reg = registry(o);
  const SamplerConfig def;
  SamplerConfig c = f.sampler;
  const std::string t = "lli-chat";
  if (!f.temperature->count()) c.temperature = reg.tool_double(t, "temperature", def.temperature);
  if (!f.top_p->count()) c.top_p = reg.tool_double(t, "top_p", def.top_p);
  if (!f.top_k->count()) c.top_k = reg.tool_int(t, "top_k", static_cast<int>(def.top_k));
  if (!f.repetition_penalty->count()) c.repetition_penalty = reg.tool_double(t, "repetition_penalty", def.repetition_penalty);
  if (!f.max_new_tokens->count()) c.max_new_tokens = reg.tool_int(t, "max_new_tokens", static_cast<int>(def.max_new_tokens));
  c.seed = o.seed ? static_cast<std::uint64_t>(*o.seed) : static_cast<std::uint64_t>(reg.tool_int(t, "seed", 0));
  c.validate();
  return c;
}

pipelines::ChatOptions chat_options(const CommonOptions& o, const ChatFlags& f) {
  const Registry& reg = registry(o);
  pipelines::ChatOptions co;
  co.device = parse_device(o.device);
  co.dtype = parse_dtype(o.dtype);
  co.image_aspect = pipelines::parse_chat_image_aspect(
      f.aspect_opt->count() ? f.image_aspect : reg.tool_string("lli-chat", "image_aspect", "crop"));
  co.system = f.system_opt->count() ? f.system : reg.tool_string("lli-chat", "system", "");
  co.weights = pipelines::parse_weights_choice(f.weights);
  co.quantize = f.quantize;
  return co;
}

// The model, loaded under an Activity (an allocation failure reads "out of memory while loading
// the model <name>").
ChatSession load_chat(const ResolvedModel& m, const CommonOptions& o, const ChatFlags& f) {
  Activity loading("loading the model " + m.name);
  return ChatSession::load(m.dir, chat_options(o, f));
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

nlohmann::json answer_json(const ChatAnswer& a) {
  const auto& t = a.timings;
  return {{"text", a.text},
          {"tokens", a.tokens},
          {"n_prompt_tokens", a.n_prompt_tokens},
          {"n_reused_tokens", a.n_reused_tokens},
          {"finish_reason", pipelines::finish_reason_name(a.finish)},
          {"timings",
           {{"load_ms", t.load_ms},
            {"image_ms", t.image_ms},
            {"prefill_ms", t.prefill_ms},
            {"decode_ms", t.decode_ms},
            {"decode_tokens_per_s", t.decode_tokens_per_s}}}};
}

// The exchanges of the session's chat made on `step` (a user turn followed by an assistant turn).
std::vector<ChatExchange> session_exchanges(const Session& s, int step) {
  std::vector<ChatExchange> out;
  const auto& chat = s.chat();
  for (std::size_t i = 0; i + 1 < chat.size(); ++i) {
    const auto& u = chat[i];
    const auto& a = chat[i + 1];
    if (u.role == ChatRole::user && a.role == ChatRole::assistant && u.step == step && a.step == step) {
      out.push_back({u.text, a.text});
      ++i;
    }
  }
  return out;
}

// Asks, streaming the answer to `out` (unless --json), and prints the result.
ChatAnswer ask_and_print(const CommonOptions& o, ChatSession& chat, const std::string& question,
                         const SamplerConfig& cfg, std::FILE* out, nlohmann::json extra = nlohmann::json::object()) {
  std::function<void(const std::string&)> sink;
  if (!o.json)
    sink = [out](const std::string& chunk) {
      std::fwrite(chunk.data(), 1, chunk.size(), out);
      std::fflush(out);
    };
  bool streamed = false;
  if (sink)
    sink = [sink, &streamed](const std::string& chunk) {
      streamed = true;
      sink(chunk);
    };
  ChatAnswer a;
  try {
    Activity answering("answering a question (" + std::to_string(cfg.max_new_tokens) + " new tokens at most)");
    a = chat.ask(question, cfg, sink);
  } catch (const InterruptedError&) {
    if (streamed) std::fputc('\n', out);  // end the partial answer's line before the error
    throw;
  }
  if (o.json) {
    nlohmann::json j = answer_json(a);
    j["weights"] = {{"residency", chat.weights_name()}, {"format", chat.weight_format()}, {"dtype", chat.dtype_name()}};
    j.update(extra);
    std::fprintf(out, "%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fputc('\n', out);
  }
  std::fflush(out);
  return a;
}

void record_exchange(SessionContext& sc, int step, const std::string& question, const ChatAnswer& a) {
  sc.get().add_chat_turn(ChatRole::user, trim(question), step);
  sc.get().add_chat_turn(ChatRole::assistant, a.text, step);
  sc.save();
}

void run_batch_mode(const CommonOptions& o, const ChatFlags& f, const SamplerConfig& cfg) {
  if (f.question.empty()) throw UsageError("batch mode needs the question as an argument");
  if (f.interactive) throw UsageError("--interactive works on one image, not with a batch -i");
  if (o.outdir.empty()) throw UsageError("batch mode (-i " + o.image + ") needs --outdir DIR for the <stem>.txt answers");
  const ResolvedModel m = require_model(o, "lli-chat");
  ChatSession chat = load_chat(m, o, f);
  const int rc = run_batch(
      o, "lli-chat", [&](const fs::path& in) { return fs::path(o.outdir) / (in.stem().string() + ".txt"); },
      [&](const BatchItem& item, nlohmann::json& result) {
        Image img = read_image(item.input.string());
        chat.set_image(img.bgr);
        ChatAnswer a = chat.ask(f.question, cfg);
        write_file_atomic(item.output.string(), a.text + "\n");
        result.update(answer_json(a));
      });
  if (rc) throw Error(static_cast<ExitCode>(rc), "some batch items failed (see above)");
}

void run_interactive(const CommonOptions& o, const ChatFlags& f, const SamplerConfig& cfg, SessionContext& sc) {
  if (o.image == "-" || o.session == "-")
    throw UsageError("interactive mode reads questions from stdin; give the image / session as a file");
  std::string image_name;
  int step = -1;
  cv::Mat first;
  if (sc.active() || !o.image.empty()) {
    image_name = sc.input_image();
    step = sc.input_step();
    first = read_image(image_name).bgr;
  }
  const ResolvedModel m = require_model(o, "lli-chat");
  ChatSession chat = load_chat(m, o, f);
  if (!first.empty()) chat.set_image(first);
  if (sc.active()) {
    sc.save();  // an imported -i step is recorded even if no question follows
    chat.set_history(session_exchanges(sc.get(), step));
  }
  if (!first.empty()) load_prompt_cache(chat, f);
  const bool tty = isatty(STDIN_FILENO);
  log_info("lli-chat: {} loaded ({}, {}) in {:.1f} s; {}", m.name, chat.dtype_name(), chat.device_name(),
           chat.load_ms() / 1000.0, kInteractiveHelp);
  if (first.empty()) log_info("lli-chat: no image yet (text only); /image PATH adds one");
  std::string line;
  for (;;) {
    if (tty && log_level() != LogLevel::quiet) {
      std::fputs("> ", stderr);
      std::fflush(stderr);
    }
    if (!std::getline(std::cin, line)) break;
    check_interrupted();
    const std::string cmd = trim(line);
    if (cmd.empty()) continue;
    try {
      if (cmd == "/quit" || cmd == "/exit") break;
      if (cmd == "/help") {
        std::fprintf(stderr, "%s\n", kInteractiveHelp);
      } else if (cmd == "/reset") {
        chat.reset();
        log_info("lli-chat: conversation cleared");
      } else if (cmd.rfind("/image", 0) == 0 && (cmd.size() == 6 || cmd[6] == ' ')) {
        const std::string path = trim(cmd.substr(6));
        if (path.empty()) throw UsageError("/image needs a path");
        Image img = read_image(path);
        chat.set_image(img.bgr);
        image_name = path;
        if (sc.active()) {
          step = sc.get().import_image(path);
          sc.save();
        }
        log_info("lli-chat: image {} ({}x{}); new conversation", path, img.bgr.cols, img.bgr.rows);
      } else if (cmd.rfind("/save", 0) == 0 && (cmd.size() == 5 || cmd[5] == ' ')) {
        const std::string path = trim(cmd.substr(5));
        if (path.empty()) throw UsageError("/save needs a file name");
        nlohmann::json turns = nlohmann::json::array();
        for (const auto& e : chat.history()) {
          turns.push_back({{"role", "user"}, {"text", e.question}});
          turns.push_back({{"role", "assistant"}, {"text", e.answer}});
        }
        nlohmann::json j = {{"model", m.name},
                            {"image", image_name.empty() ? nlohmann::json() : nlohmann::json(image_name)},
                            {"system", chat_options(o, f).system},
                            {"turns", turns}};
        if (step >= 0) j["step"] = step;
        write_file_atomic(path, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
        log_info("lli-chat: conversation saved to {}", path);
      } else if (cmd[0] == '/') {
        throw UsageError("unknown command " + cmd.substr(0, cmd.find(' ')) + "; " + kInteractiveHelp);
      } else {
        ChatAnswer a = ask_and_print(o, chat, cmd, cfg, stdout);
        if (sc.active()) record_exchange(sc, step, cmd, a);
      }
    } catch (const InterruptedError&) {
      throw;
    } catch (const Error& e) {
      // A bad command, image or question does not end the conversation.
      if (e.code() == ExitCode::model || e.code() == ExitCode::runtime) throw;
      print_error("lli-chat", e.what());
    }
  }
  save_prompt_cache(chat, f);  // once, when the chat ends (/quit or end of input; not on Ctrl-C)
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lli-chat: talk about an image (LLaVA-1.5)"};
  app.footer(kExamples);
  CommonOptions o;
  FlagSet which;
  which.output = false;  // answers go to stdout (batch: --outdir)
  add_common_flags(app, o, which);
  ChatFlags f;
  app.add_option("question", f.question, "The question (read from stdin when absent and stdin is not a terminal)");
  f.system_opt = app.add_option("--system", f.system, "System prompt put before the conversation (default: none)");
  f.temperature = app.add_option("--temperature", f.sampler.temperature, "Sampling temperature (0 = greedy; default 0.2)");
  f.top_p = app.add_option("--top-p", f.sampler.top_p, "Nucleus sampling threshold in (0, 1] (1 = off; default 0.7)");
  f.top_k = app.add_option("--top-k", f.sampler.top_k, "Keep the K most likely tokens (0 = off; default 50)");
  f.repetition_penalty =
      app.add_option("--repetition-penalty", f.sampler.repetition_penalty, "Repetition penalty (1 = off; default 1)");
  f.max_new_tokens = app.add_option("--max-new-tokens", f.sampler.max_new_tokens, "Answer length limit (default 512)");
  f.aspect_opt = app.add_option("--image-aspect", f.image_aspect,
                                "crop: resize + centre crop as the llava-hf processor (default); pad: pad to a square "
                                "first as the original LLaVA-1.5");
  app.add_option("--prompt-cache", f.prompt_cache,
                 "Keep the conversation's KV cache in FILE: a later run on the same image and model prefills only "
                 "what differs (the image's tokens are reused; ~0.3 GB for a 7B model)");
  app.add_option("--weights", f.weights,
                 "Where the weights live: mmap (used in place from the page cache: instant load), copy (read "
                 "into huge-page memory: a few seconds to load, faster prefill and decoding), auto (copy when "
                 "the memory allows; default)")
      ->check(CLI::IsMember({"auto", "mmap", "copy"}));
  app.add_option("--quantize", f.quantize,
                 "Quantize the language model at load: q8_0 (8.5 bits/weight) or q4_k (4.5 bits/weight); faster "
                 "decoding, slightly different answers. lli-quantize writes such a checkpoint once")
      ->check(CLI::IsMember({"q8_0", "q4_k"}));
  app.add_flag("--interactive", f.interactive,
               "Chat in a loop: questions and /commands line by line from stdin, even when it is not a terminal");

  return run_tool("lli-chat", app, argc, argv, o, [&] {
    apply_runtime_options(o, /*uses_torch=*/true);
    const SamplerConfig cfg = sampler_config(o, f);
    (void)chat_options(o, f);  // --image-aspect errors before any work

    if (f.prompt_cache == "-") throw UsageError("--prompt-cache needs a file name");
    if (is_batch_input(o.image)) {
      if (!f.prompt_cache.empty()) throw UsageError("--prompt-cache is for one image, not batch mode");
      return run_batch_mode(o, f, cfg);
    }
    if (!o.outdir.empty()) throw UsageError("--outdir is for batch mode (-i DIR or -i @list.txt)");

    SessionContext sc(o, "lli-chat");
    const bool interactive = f.interactive || (f.question.empty() && isatty(STDIN_FILENO));
    if (interactive) {
      if (!f.question.empty()) throw UsageError("--interactive takes its questions from stdin, not as an argument");
      return run_interactive(o, f, cfg, sc);
    }
    if (!sc.active() && o.image.empty()) throw UsageError("no image: pass -i IMAGE or --session FILE");

    // The question: the argument, else stdin.
    std::string question = f.question;
    if (question.empty()) {
      if (o.image == "-" || o.session == "-")
        throw UsageError("stdin carries the " + std::string(o.image == "-" ? "image" : "session") +
                         "; give the question as an argument");
      question = trim(read_file("-", 1 << 20));
      if (question.empty()) throw UsageError("no question: pass it as an argument or on stdin");
    }

    // Inputs before the model: a bad image or session is reported without loading anything.
    const std::string input = sc.input_image();
    Image img = read_image(input);
    const ResolvedModel m = require_model(o, "lli-chat");
    ChatSession chat = load_chat(m, o, f);
    chat.set_image(img.bgr);
    const int step = sc.input_step();
    if (sc.active()) chat.set_history(session_exchanges(sc.get(), step));
    load_prompt_cache(chat, f);
    log_debug("lli-chat: {} ({}x{}), model {} ({}, {})", input, img.bgr.cols, img.bgr.rows, m.name, chat.dtype_name(),
              chat.device_name());

    nlohmann::json extra = {{"image", input}};
    if (sc.active()) extra["step"] = step;
    ChatAnswer a = ask_and_print(o, chat, question, cfg, stdout_is_session(o) ? stderr : stdout, extra);
    if (sc.active()) record_exchange(sc, step, question, a);
    save_prompt_cache(chat, f);
  });
}
