// Ref: haotian-liu/LLaVA (LLaVA-1.5 REC prompts; expand2square) — see llava_grounding.h.
#include "pipelines/ground_llava.h"

#include "core/quote.h"
#include "lli/error.h"

namespace lli::pipelines {

LlavaGrounding ground_with_llava(ChatSession& chat, const cv::Mat& bgr, const std::string& phrase) {
  if (chat.image_aspect() != ChatImageAspect::pad)
    throw UsageError("llava grounder: the chat model must be loaded with --image-aspect pad (LLaVA-1.5's "
                     "boxes refer to the photo padded to a square)");
  LlavaGrounding g;
  g.question = llava_grounding_question(phrase);
  chat.set_image(bgr);
  SamplerConfig greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = kGroundingMaxTokens;
  g.answer = chat.ask(g.question, greedy).text;
  const auto box = parse_llava_box(g.answer);
  if (!box)
    throw RuntimeError("llava grounder: no box [x0, y0, x1, y1] in the answer for " + quote_excerpt(phrase) + ": " +
                       quote_excerpt(g.answer));
  g.square = *box;
  g.box = llava_square_box_to_pixels(*box, bgr.cols, bgr.rows);
  if (g.box.empty())
    throw RuntimeError("llava grounder: the box in the answer for " + quote_excerpt(phrase) +
                       " lies in the padding outside the photo: " + quote_excerpt(g.answer));
  return g;
}

}  // namespace lli::pipelines
