// Ref: IOPaint iopaint/model/base.py (HDStrategy.CROP: crop, run at the model size, paste back);
// LLaVA-Interactive's GLIGEN inpainting (boxes with phrases, beta 1.0).
#include "pipelines/edit.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

#include "lli/error.h"
#include "lli/log.h"

namespace lli::pipelines {

InpaintRegionResult inpaint_region(GLIGENGenerator& gen, const InpaintRegionRequest& req) {
  if (req.image.empty() || req.image.type() != CV_8UC3) throw InputError("inpaint: expected an 8-bit BGR image");
  if (!gen.info().inpainting)
    throw ModelError("inpaint: the checkpoint is not an inpainting model (its UNet takes " +
                     std::to_string(gen.info().in_channels) + " channels; GLIGEN inpainting takes " +
                     std::to_string(2 * gen.info().latent_channels + 1) + ")");
  if (req.boxes.empty()) throw UsageError("inpaint: no box to draw into (give --box x0,y0,x1,y1,phrase)");
  const cv::Rect frame(0, 0, req.image.cols, req.image.rows);
  cv::Rect roi;
  for (std::size_t i = 0; i < req.boxes.size(); ++i) {
    const auto& b = req.boxes[i];
    if (b.phrase.empty()) throw UsageError("inpaint: box " + std::to_string(i) + " has no phrase");
    const cv::Rect r(cv::Point(static_cast<int>(std::floor(b.box.x)), static_cast<int>(std::floor(b.box.y))),
                     cv::Point(static_cast<int>(std::ceil(b.box.br().x)), static_cast<int>(std::ceil(b.box.br().y))));
    if ((r & frame) != r || r.area() == 0)
      throw UsageError("inpaint: box " + std::to_string(i) + " is not inside the " + std::to_string(frame.width) + "x" +
                       std::to_string(frame.height) + " image");
    roi = roi.area() ? (roi | r) : r;
  }
  // The paste region: the given one, or the boxes.
  cv::Mat region;
  if (!req.region.empty()) {
    if (req.region.size() != req.image.size() || req.region.type() != CV_8UC1)
      throw InputError("inpaint: the region mask differs from the image in size or type");
    region = req.region > 0;
    const cv::Rect rb = cv::boundingRect(region);
    if (rb.area()) roi |= rb;
  } else {
    region = cv::Mat::zeros(req.image.size(), CV_8UC1);
    for (const auto& b : req.boxes)
      cv::rectangle(region, cv::Point(static_cast<int>(std::floor(b.box.x)), static_cast<int>(std::floor(b.box.y))),
                    cv::Point(static_cast<int>(std::ceil(b.box.br().x)) - 1, static_cast<int>(std::ceil(b.box.br().y)) - 1),
                    cv::Scalar(255), cv::FILLED);
  }

  InpaintRegionResult res;
  const int model = static_cast<int>(gen.default_width());
  res.model_size = model;
  res.crop = plan_square_crop(req.image.size(), roi, req.context);
  GenerateRequest g = req.generate;
  g.width = g.height = model;
  g.inpaint_image = extract_square(req.image, res.crop, model);
  g.boxes.clear();
  std::string joined;
  for (const auto& b : req.boxes) {
    const cv::Rect2d m = to_model(b.box, res.crop, model);
    GroundingBox gb;
    gb.x0 = std::clamp(m.x / model, 0.0, 1.0);
    gb.y0 = std::clamp(m.y / model, 0.0, 1.0);
    gb.x1 = std::clamp(m.br().x / model, 0.0, 1.0);
    gb.y1 = std::clamp(m.br().y / model, 0.0, 1.0);
    gb.phrase = b.phrase;
    g.boxes.push_back(gb);
    joined += (joined.empty() ? "" : " and ") + b.phrase;
  }
  g.prompt = req.caption.empty() ? joined : req.caption;
  log_debug("inpaint: crop {}x{}+{}+{} (pad {},{},{},{}) -> {} px model", res.crop.rect.width, res.crop.rect.height,
            res.crop.rect.x, res.crop.rect.y, res.crop.pad_left, res.crop.pad_top, res.crop.pad_right,
            res.crop.pad_bottom, model);
  res.generated = gen.generate(g);
  if (res.generated.images.empty()) throw RuntimeError("inpaint: the generator returned no image");

  // Back to the photo: the model output resized to the crop, pasted through the feathered region.
  cv::Mat patch = req.image.clone();
  restore_square(res.generated.images[0], res.crop).copyTo(patch(res.crop.rect));
  cv::Mat alpha = feather_alpha(region, req.feather);
  cv::Mat outside = cv::Mat::zeros(alpha.size(), CV_32F);  // nothing changes outside the crop
  alpha(res.crop.rect).copyTo(outside(res.crop.rect));
  res.image = composite(req.image, patch, outside);
  res.changed = nonzero_mask(outside);
  return res;
}

}  // namespace lli::pipelines
