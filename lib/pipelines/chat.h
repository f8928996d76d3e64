// Chat pipeline (LLaVA-1.5): owns the loaded model, tokenizer, chat template, image preprocessing
// settings, the KV cache and the conversation. Orchestration only: the math lives in
// models/llava.h, the text handling in text/, token selection in sampling/. Torch-free header
// (cv::Mat in, plain structs out) so that tools need no libtorch include.
//
// Conversation and KV cache: every ask() renders the whole conversation with the chat template
// (history + the new question), tokenizes it and compares the ids with the ids whose keys/values
// the cache already holds. The cache is truncated to the longest common prefix and only the rest
// is prefilled, so a follow-up question costs only its own tokens (the image is never re-encoded
// while it stays in the prefix), and the result is the same as a fresh prefill of the rendered
// conversation. set_image() computes nothing until the next ask() needs the image features; they
// are then kept until the image changes.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lli/device.h"
#include "sampling/sampler_config.h"
#include "text/chat_template.h"

namespace lli::pipelines {

enum class ChatImageAspect {
  crop,  // llava-hf processor (default): shortest edge -> size, centre crop
  pad,   // original LLaVA-1.5: pad to a square with the mean colour first
};
// "crop" / "resize_crop" or "pad" / "pad_square"; UsageError naming --image-aspect otherwise.
ChatImageAspect parse_chat_image_aspect(const std::string& s);

// Where the weights live (--weights): see lli/safetensors.h's Residency. automatic = copy on CPU
// when the converted weights fit in the available memory with room to spare, else mmap.
enum class WeightsChoice { automatic, mmap, copy };
// "auto", "mmap", "copy"; UsageError naming --weights otherwise.
WeightsChoice parse_weights_choice(const std::string& s);

struct ChatOptions {
  DeviceChoice device;                          // cpu (default) or cuda[:N]
  WeightsChoice weights = WeightsChoice::automatic;
  std::string quantize;  // "q8_0" / "q4_k": quantize the language model at load ("" = no)
  DTypeChoice dtype = DTypeChoice::automatic;   // resolved with resolve_dtype()
  ChatImageAspect image_aspect = ChatImageAspect::crop;
  text::ChatStyle style = text::ChatStyle::llava_v1;
  std::string system;  // system prompt (empty: none)
};

struct ChatTimings {
  double load_ms = 0;     // model + tokenizer load (the same for every answer of a session)
  double image_ms = 0;    // image preprocessing + vision tower + projector (0 when cached)
  double prefill_ms = 0;  // everything before the first token: image_ms + prompt prefill
  double decode_ms = 0;   // the single-token steps after the first token
  double decode_tokens_per_s = 0;  // single-token steps per second (0 when there were none)
};

enum class FinishReason { eos, stop_string, length };
const char* finish_reason_name(FinishReason r);  // "eos", "stop_string", "length"

struct ChatAnswer {
  std::string text;                  // the answer, stop strings cut, surrounding whitespace stripped
  std::vector<std::int64_t> tokens;  // every generated token id (an ending EOS included)
  std::int64_t n_prompt_tokens = 0;  // the whole conversation prompt (image tokens expanded, BOS)
  std::int64_t n_reused_tokens = 0;  // prompt tokens whose keys/values came from the cache
  FinishReason finish = FinishReason::length;
  ChatTimings timings;
};

// One question/answer pair of the conversation (answer empty only while being generated).
struct ChatExchange {
  std::string question;
  std::string answer;
};

class ChatSession {
 public:
  // Loads the checkpoint directory (config.json, safetensors, tokenizer, preprocessor config).
  // ModelError naming the directory/file on a missing or invalid checkpoint or device.
  static ChatSession load(const std::filesystem::path& dir, const ChatOptions& opts);

  ChatSession(ChatSession&&) noexcept;
  ChatSession& operator=(ChatSession&&) noexcept;
  ~ChatSession();

  // A new image (BGR CV_8UC3, as lli::read_image returns): the conversation restarts (history
  // cleared); its features are computed by the next ask(). InputError on an empty / non-BGR Mat.
  void set_image(const cv::Mat& bgr);
  bool has_image() const;
  // Forgets the conversation (the image and its cached features stay).
  void reset();
  // Replaces the conversation with earlier exchanges (e.g. from a session file); the first one
  // carries the image. The next ask() continues it.
  void set_history(const std::vector<ChatExchange>& history);
  const std::vector<ChatExchange>& history() const;

  void set_system(const std::string& system);  // changes the prompt: the next ask() re-prefills

  // Answers `question` about the image given the history, streams the text as it is decided
  // (on_text gets chunks that never split a UTF-8 character nor contain a stop string; their
  // concatenation equals ChatAnswer::text), and appends the exchange to the history.
  // Generation ends at EOS, a stop string ("</s>", "USER:") or cfg.max_new_tokens (capped by the
  // model's context length). Checks lli::check_interrupted() between tokens (InterruptedError;
  // the history is then left unchanged). InputError for an empty question or a conversation
  // longer than the model's context; UsageError for an invalid SamplerConfig.
  ChatAnswer ask(const std::string& question, const SamplerConfig& cfg,
                 const std::function<void(const std::string&)>& on_text = {});

  // Prompt cache (as llama.cpp's --prompt-cache): the KV cache of the conversation so far and the
  // token ids it holds, tied to this model, compute dtype and image. save_prompt_cache writes it
  // atomically as safetensors (2 x layers x kv_heads x head_dim x tokens values in the compute
  // dtype: ~0.3 GB for 600 tokens of a 7B model in bf16); nothing to save (empty cache) writes
  // nothing and returns false. load_prompt_cache restores it when this model, dtype and image made
  // it, so the next ask() prefills only what differs (the image and the shared conversation are
  // reused); otherwise, or for an unreadable file, it returns false with the reason in *why and
  // leaves the session as it was. Call it after set_image().
  bool save_prompt_cache(const std::filesystem::path& file) const;
  bool load_prompt_cache(const std::filesystem::path& file, std::string* why = nullptr);
  // Identity of the loaded model and compute dtype (sha256 hex) that prompt caches carry.
  const std::string& fingerprint() const;

  // Token ids the KV cache currently holds keys/values for (for tests and diagnostics).
  const std::vector<std::int64_t>& cached_tokens() const;
  // The prompt ask(question) would feed (rendered conversation, tokenized, image expanded).
  std::vector<std::int64_t> prompt_tokens(const std::string& question) const;
  std::string render_prompt(const std::string& question) const;

  double load_ms() const;
  std::int64_t context_length() const;  // max_position_embeddings of the language model
  std::string dtype_name() const;       // "f32", "bf16", "f16"
  std::string device_name() const;      // "cpu", "cuda:0"
  std::string weights_name() const;     // the residency used: "mmap" or "copy"
  std::string weight_format() const;    // the language model's linear weights: "f32", "bf16", "q8_0", "q4_k"
  ChatImageAspect image_aspect() const;  // how images are fitted to the vision tower

 private:
  struct Impl;
  explicit ChatSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lli::pipelines
