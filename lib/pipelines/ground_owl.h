// Open-vocabulary detection with OWL-ViT / OWLv2 checkpoints (transformers layout: config.json,
// model.safetensors, preprocessor_config.json, CLIP tokenizer files): phrases -> boxes in original
// image pixels. Orchestration only (models/owl.h, models/owl_preprocess.h, text/clip_tokenizer.h);
// torch-free header.
//
// Flow: image_features() runs the vision tower and every query-independent head once (class
// embeddings, logit shift and scale, boxes, objectness) and returns an opaque value that can be
// serialised (features_to_bytes / features_from_bytes) and cached, e.g. in a session keyed by the
// image sha256 + model; query() then runs only the text tower and one matrix product per call.
//
// Phrases are tokenized as the OWL processors do (CLIP BPE, padded with the pad token to
// model_max_length, attention mask over BOS..EOS); a phrase longer than that is truncated (the
// reference would fail) with a warning.
//
// Post-processing:
//   owl_post_process: exactly transformers' post_process_object_detection: per box label =
//     argmax over the phrases, score = sigmoid of that logit, kept when score > threshold, in
//     patch order, boxes not clipped (owlv2 scales by max(H, W), owlvit by (W, H, W, H));
//   owl_best_for_phrase: the box with the highest logit for one phrase (whatever the others say);
//   owl_instances_for_phrase: the boxes labelled with a phrase above a threshold, then
//     non-maximum suppression (boxes overlapping a higher-scoring kept one by IoU > nms_iou are
//     dropped), by decreasing score. The reference has no NMS; OWL gives several overlapping boxes
//     per object, so "every instance" needs one.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lli/device.h"

namespace lli::pipelines {

struct OwlOptions {
  DeviceChoice device;
  DTypeChoice dtype = DTypeChoice::automatic;  // towers' dtype (resolve_dtype); heads run in fp32
};

struct OwlBox {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // original image pixels (may reach beyond the image)
};

struct OwlDetection {
  int box_index = 0;  // patch index (row-major over the g x g grid)
  int phrase = 0;     // index into the phrases of the query
  float logit = 0;
  float score = 0;    // sigmoid(logit)
  OwlBox box;
  float objectness = 0;  // owlv2's objectness logit; 0 for owlvit
};

// Everything a query returns: per box and phrase.
struct OwlQueryResult {
  int num_boxes = 0, num_phrases = 0;
  std::vector<float> logits;       // [num_boxes * num_phrases], row-major
  std::vector<OwlBox> boxes;       // [num_boxes], original pixels
  std::vector<float> objectness;   // [num_boxes] (owlv2) or empty
  float logit(int box, int phrase) const { return logits[static_cast<std::size_t>(box) * num_phrases + phrase]; }
};

// Intersection over union of two boxes (0 when the union is empty).
double owl_box_iou(const OwlBox& a, const OwlBox& b);

std::vector<OwlDetection> owl_post_process(const OwlQueryResult& r, double threshold);
OwlDetection owl_best_for_phrase(const OwlQueryResult& r, int phrase);
std::vector<OwlDetection> owl_instances_for_phrase(const OwlQueryResult& r, int phrase, double threshold,
                                                   double nms_iou = 0.5);

// Image features of one image for one model: opaque, cheap to copy (shared, immutable).
class OwlImageFeatures {
 public:
  struct Impl;
  OwlImageFeatures() = default;
  explicit OwlImageFeatures(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  bool empty() const { return !impl_; }
  int image_width() const;
  int image_height() const;
  const Impl& impl() const;  // RuntimeError when empty

 private:
  std::shared_ptr<const Impl> impl_;
};

struct OwlTimings {
  double preprocess_ms = 0, vision_ms = 0, heads_ms = 0;  // image_features
  double text_ms = 0, logits_ms = 0;                      // last query
};

class OwlDetector {
 public:
  // Loads <dir>/{config.json, model.safetensors, preprocessor_config.json, tokenizer files}.
  // ModelError for a missing/invalid checkpoint.
  explicit OwlDetector(const std::filesystem::path& dir, const OwlOptions& opts = {});
  ~OwlDetector();
  OwlDetector(OwlDetector&&) noexcept;
  OwlDetector& operator=(OwlDetector&&) noexcept;

  // bgr: CV_8UC3 (as lli::read_image returns).
  OwlImageFeatures image_features(const cv::Mat& bgr) const;
  // safetensors bytes (F32 tensors + metadata: format, version, fingerprint, original size).
  std::string features_to_bytes(const OwlImageFeatures& f) const;
  // InputError naming `source` for malformed bytes or features of another model.
  OwlImageFeatures features_from_bytes(std::string_view bytes, const std::string& source) const;

  // InputError when phrases is empty or a phrase is empty.
  OwlQueryResult query(const OwlImageFeatures& f, const std::vector<std::string>& phrases) const;
  // The token ids and attention mask query() uses ([phrase][model_max_length]).
  std::vector<std::vector<std::int64_t>> tokenize(const std::vector<std::string>& phrases,
                                                  std::vector<std::vector<std::int64_t>>* attention_mask = nullptr) const;

  const char* variant() const;             // "owlv2" | "owlvit"
  const std::string& fingerprint() const;  // model identity (sha256 of config + a few weights)
  std::string describe() const;            // one line: sizes, device, dtype
  const OwlTimings& timings() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lli::pipelines
