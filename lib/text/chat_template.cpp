// Ref: LLaVA llava/conversation.py (conv_llava_v1, Conversation.get_prompt for SeparatorStyle.TWO).
#include "text/chat_template.h"

#include <algorithm>

#include <fmt/format.h>

#include "lli/error.h"

namespace lli::text {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string strip(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

}  // namespace

std::string ChatTemplate::render(const std::vector<ChatTurn>& turns) const {
  if (turns.empty()) throw InputError("chat: no turns to render");
  const std::string user = "USER: ";
  const std::string assistant = "ASSISTANT:";
  const std::string end_of_answer = style == ChatStyle::llava_v1 ? "</s>" : " ";
  std::string out;
  if (!system.empty()) out += system + " ";
  for (std::size_t i = 0; i < turns.size(); ++i) {
    const ChatTurn& t = turns[i];
    if (!image_token.empty() && t.question.find(image_token) != std::string::npos)
      throw InputError(
          fmt::format("chat: turn {}: the question contains the image placeholder \"{}\"", i + 1, image_token));
    out += user;
    if (t.image) out += image_token + "\n";
    out += t.question + " " + assistant;
    if (t.answer) {
      out += " " + strip(*t.answer) + end_of_answer;
    } else if (i + 1 != turns.size()) {
      throw InputError(
          fmt::format("chat: turn {} of {} has no answer (only the last turn may be open)", i + 1, turns.size()));
    }
  }
  return out;
}

std::vector<std::string> ChatTemplate::stop_strings() const { return {"</s>", "USER:"}; }

bool trim_at_stop(std::string& text, const std::vector<std::string>& stops) {
  std::size_t best = std::string::npos;
  for (const auto& s : stops) {
    if (s.empty()) continue;
    best = std::min(best, text.find(s));
  }
  if (best == std::string::npos) return false;
  text.resize(best);
  return true;
}

StopStringFilter::StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

std::string StopStringFilter::push(std::string_view chunk) {
  if (stopped_) return {};
  pending_.append(chunk.data(), chunk.size());
  std::string out;
  if (trim_at_stop(pending_, stops_)) {
    stopped_ = true;
    out.swap(pending_);
  } else {
    // Hold back the longest tail that is a proper prefix of a stop string.
    std::size_t hold = 0;
    for (const auto& s : stops_) {
      for (std::size_t n = std::min(s.size() - 1, pending_.size()); n > hold; --n) {
        if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
          hold = n;
          break;
        }
      }
    }
    out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
  }
  text_ += out;
  return out;
}

std::string StopStringFilter::finish() {
  if (stopped_) return {};
  std::string out;
  out.swap(pending_);
  text_ += out;
  return out;
}

}  // namespace lli::text
