// LLaVA as a text grounder: asks the chat model where a phrase is in a photo (LLaVA-1.5's
// referring-expression question, greedy) and maps the box it answers back to photo pixels.
// Torch-free header. The prompt, the parser and the mapping are in llava_grounding.h.
#pragma once

#include <opencv2/core.hpp>

#include <array>
#include <cstdint>
#include <string>

#include "pipelines/chat.h"
#include "pipelines/llava_grounding.h"

namespace lli::pipelines {

struct LlavaGrounding {
  std::string question;            // what was asked
  std::string answer;              // what the model answered
  std::array<double, 4> square{};  // the parsed box, normalised to the padded square
  PixelBox box;                    // the same box in photo pixels, clipped to the photo
};

// Most tokens a box answer needs ("[0.21, 0.92, 0.36, 1.0]" is ~25 LLaMA tokens).
constexpr std::int64_t kGroundingMaxTokens = 48;

// `chat` must have been loaded with ChatOptions::image_aspect = ChatImageAspect::pad (the padding
// LLaVA-1.5's boxes refer to); UsageError otherwise. Sets the image (BGR, as read_image returns;
// the conversation restarts), asks greedily with at most kGroundingMaxTokens new tokens.
// RuntimeError (exit 5) quoting the answer when it holds no box or the box lies outside the photo.
LlavaGrounding ground_with_llava(ChatSession& chat, const cv::Mat& bgr, const std::string& phrase);

}  // namespace lli::pipelines
