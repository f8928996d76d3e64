// demo-llava (issue 13): a small LLaVA-1.5 in the llava-hf layout (CLIP ViT + projector + LLaMA with
// the real LLaMA SentencePiece tokenizer), trained by lli itself on the shapes world's questions
// with libtorch autograd through the lib/models LLaVA modules (fp32; no second model definition),
// and its evaluation on held-out scenes through pipelines::ChatSession, the conversation lli-chat
// runs. Torch-free header.
//
// Training data: scenes of seeds kTrainSeedBase + step * images_per_step + i (held-out seeds are
// below 2^40), all of each scene's questions (world::questions: colour, count, kind, position,
// exists) and its caption as the answer to kDemoLlavaCaptionQuestion. Each question is one single-turn conversation as lli-chat renders it
// ("<s>USER: <image>\n<question> ASSISTANT: <answer></s>", the image token expanded), the loss is
// the cross-entropy of the answer's tokens and the closing </s> (teacher forcing); the output
// projection is applied only at those positions. The scenes follow a curriculum (large single
// objects first, the world's own 1-4 small objects after 30 % of the steps: demo_llava.cpp). The image goes through the processor lli-chat
// uses, configured to squash the whole scene to the tower's square input (size {height, width}, no
// centre crop: a crop would cut off objects at the sides).
// Ref: Liu et al., "Improved Baselines with Visual Instruction Tuning" (LLaVA-1.5, 2023);
//      transformers LlamaPreTrainedModel._init_weights (normal(0, initializer_range), v4.45).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>

#include "lli/device.h"
#include "train/demo_sam.h"  // kTrainSeedBase

namespace lli::train {

// The question demo-llava is trained to answer with the scene's caption (world::caption).
constexpr const char* kDemoLlavaCaptionQuestion = "What is in the picture?";

struct DemoLlavaOptions {
  std::filesystem::path out_dir;        // config.json, preprocessor_config.json, model.safetensors, tokenizer files
  std::filesystem::path tokenizer_dir;  // tokenizer.model (+ tokenizer_config.json, special_tokens_map.json,
                                        // added_tokens.json) copied from here
  std::int64_t steps = 3000;
  std::uint64_t seed = 1;   // weight initialisation
  int images_per_step = 8;  // scenes per step; every question of each is trained
  double lr = 1e-3;
  double weight_decay = 0.01;
  std::int64_t warmup = 150;
  int image_size = 96, patch_size = 12;
  int vision_hidden = 128, vision_layers = 4;
  int text_hidden = 128, text_layers = 4, heads = 4;
  bool fp16 = true;    // store the weights as F16 (the loader converts)
  int log_every = 50;  // rows of train-log.tsv
  double max_minutes = 0;  // > 0: stop (and save) after this much training time
};

struct DemoLlavaReport {
  std::int64_t steps = 0;
  double seconds = 0;
  double final_loss = 0;  // mean of the last log interval
  std::int64_t parameters = 0;
};

// Trains and writes the model into out_dir (each file atomically). Progress on stderr.
DemoLlavaReport train_demo_llava(const DemoLlavaOptions& o);

struct LlavaEvalKind {
  int questions = 0, correct = 0;
  double accuracy() const { return questions ? static_cast<double>(correct) / questions : 0.0; }
};
struct LlavaEvalResult {
  std::array<LlavaEvalKind, 5> by_kind;  // indexed by world::QuestionKind
  int scenes = 0;
};

// Exact-answer accuracy (greedy, the answer stripped as lli-chat prints it) on `per_kind` held-out
// questions of each kind, from the scenes seed0, seed0 + 1, ... (each scene's questions with
// world::questions(scene, seed)), asked one at a time in a fresh conversation through
// pipelines::ChatSession with lli-chat's defaults and the given dtype.
LlavaEvalResult evaluate_demo_llava(const std::filesystem::path& model_dir, int per_kind, std::uint64_t seed0 = 1,
                                    DTypeChoice dtype = DTypeChoice::automatic);

}  // namespace lli::train
