// Conversation prompt for LLaVA-1.5 (conv_llava_v1) and stop-string handling. Torch-free.
//
// Ref: LLaVA llava/conversation.py conv_llava_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>");
//      llava-hf/llava-1.5-7b-hf chat_template.json (identical for one turn, " " between turns).
//
// Exact strings produced (Q = question, A = answer, S = system prompt):
//   one turn, image    : "USER: <image>\nQ ASSISTANT:"
//   with system prompt : "S USER: <image>\nQ ASSISTANT:"
//   two turns (llava_v1): "USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"
//   two turns (llava_hf): "USER: <image>\nQ1 ASSISTANT: A1 USER: Q2 ASSISTANT:"
// The image placeholder "<image>\n" is put only in the turn that has `image` set (the turn that
// introduced the image). Answers are stripped of surrounding whitespace (LLaVA strips outputs).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lli::text {

struct ChatTurn {
  std::string question;
  std::optional<std::string> answer;  // none: the turn to generate (must be the last one)
  bool image = false;                 // this turn introduced the image
};

enum class ChatStyle {
  llava_v1,  // LLaVA's conv_llava_v1: an answer ends with "</s>" (default)
  llava_hf,  // llava-hf chat_template.json: an answer ends with " "
};

struct ChatTemplate {
  ChatStyle style = ChatStyle::llava_v1;
  std::string system;  // empty: no system prompt
  std::string image_token = "<image>";

  // The prompt for `turns`; when the last turn has no answer it ends with "ASSISTANT:".
  // InputError when a question contains the image token, when a turn other than the last lacks
  // an answer, or when `turns` is empty.
  std::string render(const std::vector<ChatTurn>& turns) const;

  // Strings that end an answer: "</s>" and "USER:" (a model that starts the next turn itself).
  std::vector<std::string> stop_strings() const;
};

// Cuts `text` at the first occurrence of any stop string; returns true when one was found.
bool trim_at_stop(std::string& text, const std::vector<std::string>& stops);

// Streaming stop-string filter: push() returns the text that can be printed now. A tail that could
// be the start of a stop string is held back until it is decided; once a stop string appears,
// everything from it on is dropped and stopped() turns true (the caller ends generation).
// The concatenation of push() results and finish() equals trim_at_stop() of the whole text.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);
  std::string push(std::string_view chunk);
  std::string finish();  // the held-back tail when generation ended without a stop string
  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }  // everything returned so far

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  std::string text_;
  bool stopped_ = false;
};

}  // namespace lli::text
