// Autograd in model forwards: off for inference (every tool), on inside a TrainingScope (the demo
// models that lli trains with its own lib/ modules and libtorch autograd, issue 13). Model forwards
// open a ForwardGuard where they used to open a torch::NoGradGuard: it disables gradients unless
// the calling thread is inside a TrainingScope. Only fp32 / fp64 paths are differentiable: the
// hand-written bf16 and quantized kernels (nn/*_bf16.h, nn/quant_*.h) are inference-only.
#pragma once

#include <torch/torch.h>


namespace lli::nn {

namespace detail {
inline thread_local bool t_training = false;
}

// Whether the calling thread is inside a TrainingScope.
inline bool training_enabled() { return detail::t_training; }

// Enables gradients in model forwards on this thread for its lifetime (nests; restores the
// previous state). Also turns torch's grad mode on.
class TrainingScope {
 public:
  TrainingScope() : prev_(detail::t_training) { detail::t_training = true; }
  ~TrainingScope() { detail::t_training = prev_; }
  TrainingScope(const TrainingScope&) = delete;
  TrainingScope& operator=(const TrainingScope&) = delete;

 private:
  bool prev_;
  torch::AutoGradMode grad_{true};
};

// torch::NoGradGuard unless training_enabled(): grad mode off for the scope, the previous mode
// restored at its end.
class ForwardGuard {
 public:
  ForwardGuard() : prev_(c10::GradMode::is_enabled()) {
    if (!training_enabled()) c10::GradMode::set_enabled(false);
  }
  ~ForwardGuard() { c10::GradMode::set_enabled(prev_); }
  ForwardGuard(const ForwardGuard&) = delete;
  ForwardGuard& operator=(const ForwardGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace lli::nn
