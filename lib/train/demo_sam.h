// demo-sam (issue 13): a small SamModel in the transformers layout, trained by lli itself on the
// shapes world (lib/world) with libtorch autograd through the lib/models SAM modules (fp32; no
// second model definition), and its evaluation on held-out scenes through the SAM pipeline that
// lli-segment runs. Torch-free header.
//
// Training data: scenes of seeds kTrainSeedBase + step * images_per_step + i (disjoint from the
// held-out seeds below 2^40 that evaluate_demo_sam uses). Per image, prompts_per_image prompts on
// random objects: the object's box (jittered), one point inside it (half of them near its most
// interior pixel), or a stroke (a straight segment inside it, turned into points as lli-segment
// does: sample_stroke_points), sometimes with a negative point outside the object.
// Loss at the padded input resolution (the low-res logits upsampled as the post-processing does):
// BCE + dice on the single-mask output (token 0), + the smallest BCE + dice of the 3 multimask
// outputs (SAM's ambiguity-aware loss), + MSE of the IoU head against each output's true IoU.
// AdamW with linear warm-up and cosine decay over a fixed number of steps (reproducible: the
// schedule and the data depend on the seed and the step count only).
// Ref: Kirillov et al., "Segment Anything" (2023), section 3 and appendix A (losses, prompt
//      simulation); transformers SamPreTrainedModel._init_weights (v4.45).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "train/train_report.h"

namespace lli::train {

struct DemoSamOptions {
  std::filesystem::path out_dir;  // config.json, preprocessor_config.json, model.safetensors, train-log.tsv
  std::int64_t steps = 6000;
  std::uint64_t seed = 1;         // weight initialisation and prompt sampling
  int images_per_step = 8;
  int prompts_per_image = 4;
  double lr = 1e-3;
  double weight_decay = 0.01;
  std::int64_t warmup = 200;
  int image_size = 128;           // SAM input side (longest edge and padding)
  bool fp16 = true;               // store the weights as F16 (the loader converts to fp32)
  int log_every = 50;             // rows of train-log.tsv
  double max_minutes = 0;         // > 0: stop (and save) after this much training time
};

// Trains and writes the model into out_dir (each file atomically). Progress on stderr.
TrainReport train_demo_sam(const DemoSamOptions& o);

struct SamEvalResult {
  int objects = 0;
  double iou_point = 0, iou_box = 0, iou_stroke = 0;  // means over the objects
  // The ceiling set by the mask decoder's resolution: the true mask itself given as low-res logits
  // (its coverage of each low-res cell of the padded input, minus 0.5) through the same
  // post-processing (bilinear to the padded input, crop, bilinear to the image, > 0).
  double iou_oracle = 0;
};

// Mean IoU vs the ground truth over every object of the scenes seed0 .. seed0 + scenes - 1,
// through pipelines::SamSegmenter with lli-segment's defaults (--multimask best): from one point
// (the object's most interior pixel), from its box, and from a stroke (a horizontal segment
// through that point, inside the object, sampled as lli-segment samples strokes of width 8).
SamEvalResult evaluate_demo_sam(const std::filesystem::path& model_dir, int scenes, std::uint64_t seed0 = 1);

}  // namespace lli::train
