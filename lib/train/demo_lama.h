// demo-lama (issue 13): a small LaMa generator (advimman/lama's FFCResNetGenerator in lli's
// checkpoint layout: config.yaml + generator.safetensors) trained by lli itself on the shapes
// world (lib/world) with libtorch autograd through the lib/models LaMa modules (fp32; no second
// model definition), and its evaluation on held-out scenes through the pipeline lli-edit remove runs.
// Torch-free header.
//
// Training: the generator's layers run unfused with BatchNorm on each batch's statistics
// (LamaGenerator::set_batch_norm_training; running statistics updated with momentum 0.1, as
// nn.BatchNorm2d in train()), so the checkpoint holds trained running statistics that the
// inference path folds into the convolutions like any LaMa checkpoint's.
// Data: square scenes (side per step from {96, 128, 160}) of seeds derived from kTrainSeedBase;
// per scene one object whose hole (its mask grown by lli-edit's default dilation x U(0.5, 1.5))
// touches no other object; input cat(image x (1 - hole), hole) as predict.py builds it; target the
// scene's background inside the hole and the image outside it. Loss per image: L1 + MSE over the
// hole's pixels + known_weight x L1 over the other pixels (LaMa's known-region L1; without it the
// generator learned far slower: held-out hole PSNR on plain backgrounds 21.7 vs 30.0 dB after 400
// steps, same seed). AdamW, linear warm-up, cosine decay.
// Ref: Suvorov et al., "Resolution-robust Large Mask Inpainting with Fourier Convolutions" (2021);
//      advimman/lama configs/training/big-lama.yaml (generator), bin/predict.py (input).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>

#include "lli/device.h"
#include "train/train_report.h"

namespace lli::train {

struct DemoLamaOptions {
  std::filesystem::path out_dir;  // config.yaml, generator.safetensors, train-log.tsv
  std::int64_t steps = 2000;
  std::uint64_t seed = 1;
  int images_per_step = 8;
  double lr = 2e-3;
  double weight_decay = 0.0;
  double known_weight = 1.0;  // weight of the L1 on the pixels outside the hole (LaMa's weight_known)
  double noise_share = 0.0;   // share of the scenes given the noise background (the rest drawn as the world does)
  std::int64_t warmup = 100;
  int ngf = 16, n_downsampling = 3, n_blocks = 4;  // generator sizes (config.yaml)
  bool fp16 = true;   // store the weights as F16 (the loader converts to fp32)
  int log_every = 50;
  double max_minutes = 0;  // > 0: stop (and save) after this much training time
};

// Trains and writes the model into out_dir (each file atomically). Progress on stderr.
TrainReport train_demo_lama(const DemoLamaOptions& o);

struct LamaEvalGroup {
  int objects = 0;
  double psnr_lama = 0, psnr_telea = 0;  // mean over the objects of the hole's PSNR (dB, capped at 60)
  int lama_better = 0;                   // objects where LaMa's PSNR beat Telea's
};

struct LamaEvalResult {
  std::array<LamaEvalGroup, 4> by_background;  // index: world::Background (plain, gradient, noise, stripes)
  int skipped = 0;  // objects whose hole touched another object (no exact ground truth)
};

// Removes every object of the held-out scenes seed0 .. seed0 + scenes - 1 whose hole (its mask
// grown by lli-edit remove's default dilation) touches no other object, as `lli-edit remove` does
// (pipelines::LamaInpainter in `dtype`; Telea with lli-edit's radius 5), and compares the hole with
// the scene's true background: PSNR over the hole's pixels and channels.
LamaEvalResult evaluate_demo_lama(const std::filesystem::path& model_dir, int scenes, std::uint64_t seed0 = 1,
                                  DTypeChoice dtype = DTypeChoice::f32);

}  // namespace lli::train
