// Helpers shared by the demo-model training loops (lib/train, issue 13): PyTorch's default
// initialisation of lli's layers, the learning-rate schedule, AdamW groups. Includes libtorch:
// only lib/train/*.cpp include it.
#pragma once

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"
#include "lli/tensor_io.h"
#include "nn/layers.h"

namespace lli::train {

// What every training loop shares: Ctrl-C, the progress bar, the optional time limit, the log
// cadence and the elapsed time.
//   StepLoop loop("training x", steps, log_every, max_minutes);
//   while (loop.next()) { ... loop.step() ...; if (loop.end_step()) { log line } }
//   rep.steps = loop.steps_run(); rep.seconds = loop.seconds();
class StepLoop {
 public:
  StepLoop(std::string label, std::int64_t steps, int log_every, double max_minutes = 0)
      : bar_(std::move(label), static_cast<long>(steps)), steps_(steps), log_every_(std::max(1, log_every)),
        max_ms_(max_minutes * 60e3), t0_(now_ms()) {}
  // Starts the next step; false (and the bar finished) after the last one or the time limit.
  bool next() {
    if (started_) ++step_;
    started_ = true;
    if (step_ >= steps_ || out_of_time_) {
      bar_.finish();
      return false;
    }
    check_interrupted();
    return true;
  }
  std::int64_t step() const { return step_; }  // 0-based index of the step being run
  // After a step's work: advances the bar; true when the step gets a log line (every log_every
  // steps, the last one, and the one that ran out of time).
  bool end_step() {
    bar_.update(static_cast<long>(step_ + 1));
    out_of_time_ = max_ms_ > 0 && now_ms() - t0_ > max_ms_;
    return (step_ + 1) % log_every_ == 0 || step_ + 1 == steps_ || out_of_time_;
  }
  std::int64_t steps_run() const { return step_; }  // after the loop: the steps done
  double seconds() const { return (now_ms() - t0_) / 1e3; }

 private:
  Progress bar_;
  std::int64_t steps_, step_ = 0;
  int log_every_;
  double max_ms_, t0_;
  bool started_ = false, out_of_time_ = false;
};

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// PyTorch's default for linear and (transposed) convolution weights: U(-1/sqrt(fan_in),
// 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)); fan_in = numel / size(0) as PyTorch
// computes it for these layouts. Other tensors are left alone.
inline void init_layers_pytorch_default(torch::nn::Module& model) {
  torch::NoGradGuard ng;
  for (auto& item : model.named_modules("", true)) {
    torch::Tensor w;
    if (auto* l = dynamic_cast<nn::LinearImpl*>(item.value().get())) w = l->weight;
    if (auto* c = dynamic_cast<nn::Conv2dImpl*>(item.value().get())) w = c->weight;
    if (auto* c = dynamic_cast<nn::ConvTranspose2dImpl*>(item.value().get())) w = c->weight;
    if (!w.defined()) continue;
    const double fan_in = static_cast<double>(w.numel() / w.size(0));
    w.uniform_(-1.0 / std::sqrt(fan_in), 1.0 / std::sqrt(fan_in));
  }
}

// Linear warm-up over `warmup` steps, then cosine decay to 1 % of `peak` at `steps`.
inline double warmup_cosine_lr(double peak, std::int64_t step, std::int64_t steps, std::int64_t warmup) {
  const double warm = std::min(1.0, static_cast<double>(step + 1) / static_cast<double>(std::max<std::int64_t>(1, warmup)));
  const double prog = static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, steps));
  return peak * warm * (0.01 + 0.99 * 0.5 * (1.0 + std::cos(M_PI * prog)));
}

inline void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& grp : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(grp.options()).lr(lr);
}

// AdamW over two groups: `decay` with weight decay, `no_decay` without.
inline std::unique_ptr<torch::optim::AdamW> make_adamw(std::vector<torch::Tensor> decay, std::vector<torch::Tensor> no_decay,
                                                       double lr, double weight_decay) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty())
    groups.emplace_back(std::move(decay), std::make_unique<torch::optim::AdamWOptions>(
                                              torch::optim::AdamWOptions(lr).weight_decay(weight_decay)));
  if (!no_decay.empty())
    groups.emplace_back(std::move(no_decay),
                        std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(lr).weight_decay(0.0)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups));
}

// Every parameter of `models` set to require gradients, in one AdamW over two groups (in module
// and parameter order): those for which decays(name, tensor) holds with weight decay, the rest
// without. parameters[i] receives the number of values models[i] trains.
template <class Decays>
std::unique_ptr<torch::optim::AdamW> make_trainable_adamw(const std::vector<torch::nn::Module*>& models, Decays decays,
                                                          double lr, double weight_decay,
                                                          std::vector<std::int64_t>& parameters) {
  std::vector<torch::Tensor> decay, no_decay;
  parameters.assign(models.size(), 0);
  for (std::size_t i = 0; i < models.size(); ++i)
    for (auto& p : models[i]->named_parameters(true)) {
      p.value().set_requires_grad(true);
      (decays(p.key(), p.value()) ? decay : no_decay).push_back(p.value());
      parameters[i] += p.value().numel();
    }
  return make_adamw(std::move(decay), std::move(no_decay), lr, weight_decay);
}

// The same for one module; `parameters` receives the number of trained values.
template <class Decays>
std::unique_ptr<torch::optim::AdamW> make_trainable_adamw(torch::nn::Module& model, Decays decays, double lr,
                                                          double weight_decay, std::int64_t& parameters) {
  std::vector<std::int64_t> counts;
  auto opt = make_trainable_adamw(std::vector<torch::nn::Module*>{&model}, decays, lr, weight_decay, counts);
  parameters = counts[0];
  return opt;
}

// The trained model's tensors for save_tensors: parameters as F16 (fp16) or F32, floating-point
// buffers as F32, integer buffers (BatchNorm's num_batches_tracked) as they are.
inline TensorMap trained_tensors(torch::nn::Module& model, bool fp16) {
  torch::NoGradGuard ng;
  TensorMap tensors;
  for (const auto& p : model.named_parameters(true))
    tensors[p.key()] = p.value().detach().to(fp16 ? torch::kFloat16 : torch::kFloat32).contiguous();
  for (const auto& b : model.named_buffers(true))
    tensors[b.key()] = b.value().is_floating_point() ? b.value().detach().to(torch::kFloat32).contiguous()
                                                     : b.value().detach().clone();
  return tensors;
}

// u8 BGR [H, W, 3] -> RGB fp32 [3, H, W] in [0, 1]
inline torch::Tensor bgr_to_rgb01(const cv::Mat& bgr) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).permute({2, 0, 1}).to(torch::kFloat32).div(255.0);
}

// A JSON file (config.json, preprocessor_config.json) written atomically, indented by 2.
inline void write_json_atomic(const std::filesystem::path& p, const nlohmann::json& j) {
  write_file_atomic(p.string(), j.dump(2) + "\n");
}

// A trained model in the transformers layout: model.safetensors (trained_tensors, the metadata
// naming the demo model, its steps and seed), config.json and preprocessor_config.json, each
// written atomically.
inline void save_hf_checkpoint(const std::filesystem::path& dir, torch::nn::Module& model, bool fp16,
                               const std::string& demo_name, std::int64_t steps, std::uint64_t seed,
                               const nlohmann::json& config, const nlohmann::json& preprocessor) {
  save_tensors(dir / "model.safetensors", trained_tensors(model, fp16),
               {{"format", "pt"}, {"lli_demo", demo_name}, {"steps", std::to_string(steps)}, {"seed", std::to_string(seed)}});
  write_json_atomic(dir / "config.json", config);
  write_json_atomic(dir / "preprocessor_config.json", preprocessor);
}

// The CLIP BPE tokenizer files of `from` (vocab.json and merges.txt required; tokenizer_config.json
// and special_tokens_map.json when present) copied into `to`, each atomically. UsageError naming
// the missing file (`label`: the demo model, for the message).
inline void copy_clip_tokenizer(const std::filesystem::path& from, const std::filesystem::path& to, const std::string& label) {
  std::filesystem::create_directories(to);
  for (const std::string f : {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"}) {
    const auto src = from / f;
    if (!std::filesystem::exists(src)) {
      if (f == "vocab.json" || f == "merges.txt")
        throw UsageError(label + ": " + src.string() + ": missing (the CLIP tokenizer to ship)");
      continue;
    }
    write_file_atomic((to / f).string(), read_file(src.string()));
  }
}

// demo-gligen's --attention-aux loss of one tapped fuser (defined in demo_gligen.cpp; declared here,
// with libtorch, for its test): scores [B, heads, N, N + n_obj] ("fuser.scores", the token grid
// `grid_width` wide), boxes [B, n_obj, 4] xyxy in 0..1, masks [B, n_obj] (1 = a real object). A 0-d tensor.
torch::Tensor fuser_attention_loss(const torch::Tensor& scores, std::int64_t grid_width, const torch::Tensor& boxes,
                                   const torch::Tensor& masks);

}  // namespace lli::train
