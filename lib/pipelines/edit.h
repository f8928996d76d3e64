// GLIGEN inpainting of a region of a photo at the photo's own resolution (lli-edit inpaint, replace,
// move --regenerate). Orchestration only: the square context crop (pipelines/edit_region.h) is
// resized to the inpainting model's size, GLIGEN inpaints the boxes there (pipelines/generate.h),
// the result is resized back and pasted through the feathered region mask, so every pixel outside
// it is bit-identical to the input. Torch-free header.
#pragma once

#include <opencv2/core.hpp>

#include <string>
#include <vector>

#include "pipelines/edit_region.h"
#include "pipelines/generate.h"

namespace lli::pipelines {

struct RegionBox {
  cv::Rect2d box;      // image pixels
  std::string phrase;  // non-empty
};

struct InpaintRegionRequest {
  cv::Mat image;                 // CV_8UC3 BGR, the whole photo
  std::vector<RegionBox> boxes;  // what to draw where (the GLIGEN latent mask is these boxes)
  std::string caption;           // the prompt ("" = the phrases joined with " and ")
  cv::Mat region;                // CV_8UC1: where the result is pasted (empty = the union of the boxes)
  int feather = 8;               // px of the paste's soft edge, outside the region
  int context = 64;              // px of context around the region and boxes in the square crop
  GenerateRequest generate;      // steps, guidance, beta, seed, scheduler, negative prompt, callbacks;
                                 // prompt, boxes, inpaint_image, width and height are set here
};

struct InpaintRegionResult {
  cv::Mat image;    // CV_8UC3, the photo with the region replaced
  cv::Mat changed;  // 0/255: pixels that may differ from the input
  SquareCrop crop;  // where the model ran (image pixels) and its padding
  int model_size = 0;
  GenerateResult generated;  // the model's own output (model_size square) and timings
};

// Runs GLIGEN inpainting (an inpainting checkpoint: GLIGENGenerator::info().inpainting) on the square
// crop around the boxes and the region. UsageError for boxes outside the image or without phrases.
InpaintRegionResult inpaint_region(GLIGENGenerator& gen, const InpaintRegionRequest& req);

}  // namespace lli::pipelines
