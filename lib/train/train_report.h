// What the demo-model trainers (lib/train, issue 13) share in their torch-free interfaces: the
// first training seed and the summary of a training run.
#pragma once

#include <cstdint>

namespace lli::train {

// Training scenes have seeds from here on; the evaluations use held-out seeds below it (1, 2, ...).
constexpr std::uint64_t kTrainSeedBase = std::uint64_t{1} << 40;

struct TrainReport {
  std::int64_t steps = 0;  // optimizer steps run (the last stage's, for staged trainers)
  double seconds = 0;      // training time of those steps
  double final_loss = 0;   // mean of the last log interval
  std::int64_t parameters = 0;
};

}  // namespace lli::train
