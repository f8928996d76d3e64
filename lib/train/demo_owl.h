// demo-owl (issue 13): a small OWLv2 detector (Owlv2ForObjectDetection in the transformers layout,
// the CLIP BPE tokenizer) trained by lli itself on the shapes world (lib/world) with libtorch
// autograd through the lib/models OWL modules (fp32; no second model definition), so that
// `lli-segment --text "red circle"` works on a fresh clone; and its evaluation on held-out scenes
// through pipelines::OwlDetector, the detector lli-segment runs. Torch-free header.
//
// As OWL-ViT starts from CLIP's image and text towers, the shipped recipe starts its vision tower
// from demo-llava's (the same CLIP ViT, trained on the world's patches) and its text tower from
// demo-gligen's CLIP text encoder (init_vision / init_text; without them: transformers-style random
// initialisation). Then everything is trained on detection:
// - Data: scenes of seeds kTrainSeedBase + step * images_per_step + i (the world's 64-256 px
//   scenes), preprocessed exactly as lli-segment does (Owlv2ImageProcessor: pad to a square, resize
//   to image_size). Each object is assigned the patches of the g x g grid it covers most (at least
//   kMinCover of the patch, and at least its best-covered patch).
// - Queries per step: every "<colour> <shape>" name (49) and every shape alone (7), each rendered
//   as "<q>", "a <q>" or "the <q>" at random; a patch's target is 1 for its object's name and shape.
// - Loss: the class logits of every patch and query by the quality focal loss of GFL (the target
//   of a positive is the IoU of its patch's predicted box with the object's, without gradient, so
//   that the best-scoring patch is the one with the best box; BCE x |target - p|^2) or, with
//   quality_targets off, the sigmoid focal loss (alpha 0.25, gamma 2), summed and divided by the
//   assigned patches; on assigned patches the L1 of the box (cx, cy, w, h in the padded square) x 5
//   and 1 - GIoU x 2 (DETR's weights); objectness BCE (assigned or not).
//   One-to-many assignment by coverage instead of OWL's Hungarian matching: every patch on an
//   object predicts the object's whole box, and lli-segment takes each phrase's best-scoring box.
// Ref: Minderer et al., "Simple Open-Vocabulary Object Detection with Vision Transformers" (OWL-ViT,
//      2022) and "Scaling Open-Vocabulary Object Detection" (OWLv2, 2023); Lin et al., focal loss
//      (2017); Li et al., "Generalized Focal Loss" (2020); transformers
//      Owlv2PreTrainedModel._init_weights (v4.45).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "lli/device.h"
#include "train/train_report.h"

namespace lli::train {

struct DemoOwlOptions {
  std::filesystem::path out_dir;        // config.json, preprocessor_config.json, model.safetensors, tokenizer files, train-log.tsv
  std::filesystem::path tokenizer_dir;  // the CLIP tokenizer to ship (vocab.json, merges.txt, tokenizer_config.json with pad "!")
  std::filesystem::path init_vision;    // a llava-hf checkpoint (demo-llava) whose CLIP vision tower starts ours (same sizes)
  std::filesystem::path init_text;      // a CLIPTextModel directory (demo-gligen/text_encoder) whose text tower starts ours
  std::int64_t steps = 6000;
  std::uint64_t seed = 1;
  int images_per_step = 16;
  double lr = 1e-3;
  double weight_decay = 0.01;
  std::int64_t warmup = 200;
  int image_size = 96, patch_size = 12;
  int vision_hidden = 128, vision_layers = 4, vision_heads = 4;
  int text_hidden = 64, text_layers = 2, text_heads = 4;
  bool quality_targets = true;  // quality focal loss (a positive's class target is its box's IoU), else focal loss
  bool fp16 = true;     // store the weights as F16 (the loader converts to fp32)
  int log_every = 50;   // rows of train-log.tsv
  double max_minutes = 0;
};

// Trains and writes the model into out_dir (each file atomically). Progress on stderr.
// UsageError for inconsistent options or an init checkpoint of other sizes.
TrainReport train_demo_owl(const DemoOwlOptions& o);

struct OwlEvalResult {
  int objects = 0;         // names asked for: each distinct "<colour> <shape>" of each scene
  int found = 0;           // the name's best box has IoU >= 0.5 with an object of that name
  int above_threshold = 0; // ... and its score exceeds 0.1 (lli-segment's --box-threshold)
  int located = 0;         // the name's best box is centred inside the box of an object of that name
  double mean_iou = 0;     // of the best box with the best-matching object of that name
  int absent = 0;          // names of the world not in the scene asked for (one per scene)
  int absent_rejected = 0; // ... whose best score is <= 0.1 (lli-segment reports no match)
  double seconds = 0;
};

// Over the scenes seed0 .. seed0 + scenes - 1 (world defaults), through pipelines::OwlDetector
// with lli-segment's defaults: each object's name queried (all names of a scene in one query, as
// `lli-segment --text a --text b` does) and one name absent from the scene.
OwlEvalResult evaluate_demo_owl(const std::filesystem::path& model_dir, int scenes, std::uint64_t seed0 = 1,
                                DTypeChoice dtype = DTypeChoice::f32);

}  // namespace lli::train
