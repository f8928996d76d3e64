// Segment Anything pipeline: prompts -> SAM inputs -> masks. Orchestration only: the model math is
// in models/sam*.h, the SamProcessor steps in models/sam_preprocess.h. Torch-free header (cv::Mat
// in, plain structs out) so that tools need no libtorch include.
//
// Flow: load a SAM checkpoint directory (transformers SamModel layout) once; compute_embedding()
// runs the image encoder on a BGR image (the expensive step) and returns an opaque embedding that
// can be serialised (embedding_to_bytes / embedding_from_bytes) and cached, e.g. in a session keyed
// by the image sha256 + model; segment() and everything() run only the prompt encoder and the mask
// decoder against it.
//
// Prompt semantics (all coordinates in ORIGINAL image pixels):
//   - points only: one prompt with every point (+ the reference's "not a point" pad) -> one mask
//     (or 3 with multimask all);
//   - boxes: one prompt per box -> one mask per box; points given together with boxes are added
//     to EVERY box's prompt (transformers needs as many point groups as boxes: the points are
//     repeated once per box; there is then no pad point, as in the reference);
//   - mask_prompt: a dense prompt in the low-res logit frame (low_res x low_res, e.g. a previous
//     result's low_res_logits), applied to every prompt; alone it is a prompt of its own.
//   multimask: best = the decoder's 3 multimask outputs, the one with the highest predicted IoU
//   kept (SAM's recommendation for ambiguous single clicks); off = the single-mask output (token
//   0); all = the 3 multimask outputs.
// Per mask: the binary mask at the original size (post-processed logits > 0), the predicted IoU,
// the stability score (IoU of logits > +1 and > -1 at the original size, as the reference's mask
// generator) and the low-res logits.
//
// Strokes: sample_stroke_points() turns a polyline into point prompts (see there); strokes can also
// be rasterised into a dense mask prompt (stroke_mask_prompt, experimental: SAM was trained with
// its own low-res predictions as mask input, not with scribbles).
//
// Automatic mask generation (everything): a points_per_side^2 grid over the whole image (one crop
// layer only: no crops, so the reference's crop-edge filter never applies), each point a
// positive-click prompt with multimask output, points_per_batch prompts per decoder call; masks
// kept when predicted IoU > pred_iou_thresh and stability > stability_score_thresh (offset
// stability_score_offset), then non-maximum suppression on the masks' boxes (IoU > box_nms_thresh
// suppressed, highest predicted IoU first), as transformers' mask-generation pipeline /
// segment_anything's SamAutomaticMaskGenerator (crop_n_layers = 0, min_mask_region_area = 0).
// Ref: transformers/models/sam/{modeling_sam,processing_sam,image_processing_sam}.py (v4.45),
//      transformers/pipelines/mask_generation.py; facebookresearch/segment-anything
//      automatic_mask_generator.py, utils/amg.py.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lli/device.h"
#include "lli/prompt.h"

namespace lli::pipelines {

enum class SamMultimask { best, off, all };
SamMultimask parse_sam_multimask(const std::string& s);  // "best" | "off" | "all"; UsageError otherwise
const char* sam_multimask_name(SamMultimask m);

struct SamOptions {
  DeviceChoice device;                         // cpu (default) or cuda[:N]
  DTypeChoice dtype = DTypeChoice::automatic;  // image encoder dtype (resolve_dtype); prompt encoder
                                               // and mask decoder always run in fp32
};

struct SamPoint {
  double x = 0, y = 0;  // original image pixels
  bool positive = true;
};

struct SamBox {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // original image pixels
};

struct SamPrompt {
  std::vector<SamPoint> points;
  std::vector<SamBox> boxes;
  cv::Mat mask_prompt;  // empty, or CV_32FC1 low_res x low_res logits (SamSegmenter::low_res_size())
  SamMultimask multimask = SamMultimask::best;
};

struct SamMask {
  cv::Mat mask;            // CV_8UC1, original size, 255 where the logit > 0
  float score = 0;         // predicted IoU
  float stability = 0;     // |logit > +offset| / |logit > -offset| at the original size (0 if empty)
  cv::Mat low_res_logits;  // CV_32FC1 low_res x low_res (reusable as a mask prompt)
  int prompt_index = 0;    // box index (boxes), 0 (points / mask only), grid point index (everything)
  int mask_token = 0;      // decoder output: 0 = single-mask token, 1..3 = multimask tokens
  int area = 0;            // pixels in the mask
  cv::Rect bbox;           // tight bounding box (empty when area = 0)
};

// Image embedding of one image for one model: opaque, cheap to copy (shared, immutable).
class SamEmbedding {
 public:
  struct Impl;
  SamEmbedding() = default;
  explicit SamEmbedding(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  bool empty() const { return !impl_; }
  int image_width() const;   // original image size
  int image_height() const;
  const Impl& impl() const;  // RuntimeError when empty

 private:
  std::shared_ptr<const Impl> impl_;
};

struct SamEverythingOptions {
  int points_per_side = 32;
  int points_per_batch = 4;  // prompts per decoder call: 4 measured ~2x faster per prompt than 16
                             // on 2 CPU cores (tensors stay under glibc's 32 MiB mmap threshold)
  double pred_iou_thresh = 0.88;
  double stability_score_thresh = 0.95;
  double stability_score_offset = 1.0;
  double box_nms_thresh = 0.7;
  int max_masks = 0;  // keep at most this many after NMS (0 = all)
};

struct SamTimings {
  double preprocess_ms = 0, encoder_ms = 0;  // compute_embedding
  double decoder_ms = 0, postprocess_ms = 0;  // last segment() / everything()
};

class SamSegmenter {
 public:
  // Loads <model_dir>/{config.json, model.safetensors, preprocessor_config.json}. ModelError for
  // a missing/invalid checkpoint or an unavailable device.
  explicit SamSegmenter(const std::filesystem::path& model_dir, const SamOptions& opts = {});
  ~SamSegmenter();
  SamSegmenter(SamSegmenter&&) noexcept;
  SamSegmenter& operator=(SamSegmenter&&) noexcept;

  // bgr: CV_8UC3 (as lli::read_image returns). InputError for an unusable image.
  SamEmbedding compute_embedding(const cv::Mat& bgr) const;

  // safetensors bytes: tensor "image_embeddings" [1, C, g, g] F32 + metadata (format, version,
  // model fingerprint, original and resized sizes, encoder dtype).
  std::string embedding_to_bytes(const SamEmbedding& e) const;
  // InputError naming `source` for malformed bytes, or an embedding made by another model
  // (fingerprint or shape mismatch).
  SamEmbedding embedding_from_bytes(std::string_view bytes, const std::string& source) const;

  // InputError when the prompt is empty or invalid (non-finite coordinates, box with x1 < x0,
  // mask prompt of the wrong size/type). Boxes are decoded 4 at a time. Masks are returned by
  // prompt (box) order, then mask token. Not thread-safe (one call at a time per segmenter).
  std::vector<SamMask> segment(const SamEmbedding& e, const SamPrompt& prompt) const;

  // Automatic mask generation; masks sorted by predicted IoU (NMS order).
  std::vector<SamMask> everything(const SamEmbedding& e, const SamEverythingOptions& o = {}) const;

  // Dense mask prompt from strokes (original pixels): low_res x low_res CV_32FC1 filled with
  // `background`, positive strokes drawn with `positive_logit`, negative ones with
  // `negative_logit` (later strokes over earlier ones), the width scaled to the low-res frame
  // (at least 1 low-res pixel).
  cv::Mat stroke_mask_prompt(const SamEmbedding& e, const std::vector<Stroke>& strokes, float positive_logit = 8.f,
                             float negative_logit = -8.f, float background = 0.f) const;

  int low_res_size() const;               // side of the low-res masks / mask prompts (4 * grid)
  const std::string& fingerprint() const;  // model identity (sha256 of config + a few weights)
  std::string describe() const;            // one line: sizes, device, encoder dtype
  const SamTimings& timings() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Point prompts along a stroke polyline (pixels): the first point, then one every `spacing`
// pixels of arc length (spacing <= 0: max(8, width)), and the last point; more than `cap` points
// are subsampled evenly (first and last kept). A one-point stroke gives that point.
std::vector<SamPoint> sample_stroke_points(const std::vector<XY>& polyline, double width, bool positive,
                                           double spacing = 0, int cap = 32);

struct SamStrokeSampling {
  double spacing = 0;      // 0 = max(8, stroke width)
  int per_stroke_cap = 32;
  int total_cap = 64;      // over all strokes: each stroke keeps max(1, total_cap * n_i / n_total)
                           // points (evenly), then the whole list is evenly capped to total_cap
};

// A SAM prompt from an lli prompt already in pixels (to_pixels): points, boxes, and the strokes'
// sampled points (after the explicit points). Text and box phrases are ignored.
SamPrompt sam_prompt_from(const Prompt& pixels, SamMultimask multimask = SamMultimask::best,
                          const SamStrokeSampling& sampling = {});

// Non-maximum suppression on boxes given as (x0, y0, x1, y1), areas (x1 - x0) * (y1 - y0) as
// torchvision's box_iou (mask boxes use inclusive pixel indices, as the reference): indices kept,
// by decreasing score; a box is suppressed when its IoU with a kept one is > iou_threshold.
std::vector<int> sam_box_nms(const std::vector<cv::Vec4d>& xyxy, const std::vector<float>& scores,
                             double iou_threshold);

}  // namespace lli::pipelines
