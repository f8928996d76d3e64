// LLaVA as a grounder for lli-segment --text: the question LLaVA-1.5 was trained to answer with a
// box, the parser of its answer, and the mapping of that box back to the photo. Torch-free
// (lli_base); the chat itself runs through pipelines/chat.
//
// LLaVA-1.5's instruction data holds referring-expression examples (RefCOCO/+/g, Visual Genome)
// of the form "Please provide the bounding box coordinate of the region this sentence describes:
// <sentence>" -> "[x0, y0, x1, y1]", corners normalised to the image after it was padded to a
// square with the mean colour, centred (expand2square). So the photo is sent padded the same way
// (models::ImageAspect::pad_square) and the answer is mapped back through that padding.
// Ref: haotian-liu/LLaVA llava/mm_utils.py expand2square; the llava_v1_5_mix665k data format.
#pragma once

#include <array>
#include <optional>
#include <string>

namespace lli::pipelines {

// The training question for `phrase` (whitespace runs and control characters folded to one space,
// trimmed; a final '.' added when the phrase ends without punctuation, as the training sentences
// do). UsageError when nothing is left of the phrase.
std::string llava_grounding_question(const std::string& phrase);

// The first "[x0, y0, x1, y1]" in `answer` whose four numbers are in [0, 1] with x0 < x1 and
// y0 < y1 (plain decimals: "0.21", "1", ".5", "1.0"). nullopt when there is none.
std::optional<std::array<double, 4>> parse_llava_box(const std::string& answer);

// A box in photo pixels (x0, y0 inclusive corner, x1, y1 exclusive; doubles, not rounded).
struct PixelBox {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  bool empty() const { return !(x1 > x0 && y1 > y0); }
};

// Maps a box normalised to the centred padded square of a width x height photo back to photo
// pixels, clipped to the photo (expand2square pastes the photo at ((side - w) / 2, (side - h) / 2),
// integer division, side = max(w, h)). The result is empty() when the box lies in the padding.
PixelBox llava_square_box_to_pixels(const std::array<double, 4>& box, int width, int height);

}  // namespace lli::pipelines
