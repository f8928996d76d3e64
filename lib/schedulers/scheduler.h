// Diffusion schedulers, numerically as diffusers 0.31: PNDMScheduler (PLMS with skip_prk_steps, or
// the Runge-Kutta warm-up), DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler and
// DPMSolverMultistepScheduler (DPM-Solver++).
//
// Ref: diffusers 0.31 schedulers/scheduling_{pndm,ddim,euler_discrete,euler_ancestral_discrete,
//      dpmsolver_multistep}.py; configuration_utils.py (ConfigMixin.from_config / extract_init_dict).
//
// Configuration (scheduler/scheduler_config.json, diffusers layout): `_class_name` picks the class
// unless a kind is given; a kind swaps the class as `NewScheduler.from_config(old.config)` does:
// the keys the class knows are read from the file, the others take that class's own defaults; keys
// starting with '_' and keys listed in `_use_default_values` are not read; unknown keys are ignored.
// Every key that changes numbers is honoured or refused with a ModelError naming the file and key.
//
// Numerics: schedule tensors (betas, alphas_cumprod, sigmas) are float32 computed with the same
// torch operations, and the numpy float64 parts (timestep spacing, interpolation, Karras sigmas) in
// double, so that results agree with the reference to float32 rounding. Timesteps are integers for
// PNDM/DDIM/DPM and float32 values (fractional with `linspace` spacing) for Euler / Euler ancestral;
// timesteps() returns them as doubles holding exactly those values.
//
// Run state (PLMS history, DPM model outputs, step index) lives in the scheduler object;
// set_timesteps() resets it. A scheduler serves one generation at a time.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lli::schedulers {

enum class SchedulerKind { pndm, ddim, euler, euler_ancestral, dpmpp_2m };

// CLI names "pndm", "ddim", "euler", "euler-a", "dpm++2m" -> kind; "auto" -> nullopt (the config's
// `_class_name`). UsageError for any other name.
std::optional<SchedulerKind> parse_scheduler_name(const std::string& name);
std::string scheduler_cli_name(SchedulerKind kind);    // "euler-a"
std::string scheduler_class_name(SchedulerKind kind);  // "EulerAncestralDiscreteScheduler"
// diffusers class name -> kind; nullopt for a class not implemented here.
std::optional<SchedulerKind> scheduler_kind_of_class(const std::string& class_name);

// A scheduler_config.json as read: the JSON kept as-is (typed fields are parsed per class by
// make_scheduler, since defaults differ between classes).
struct SchedulerConfig {
  std::filesystem::path file;  // for messages ("<file>: <key>: ...")
  nlohmann::json json;         // the object as read
  std::string class_name;      // `_class_name`, "" when absent
};

// ModelError naming the file when it is missing, not JSON, not an object, or `_class_name` is not
// a string.
SchedulerConfig load_scheduler_config(const std::filesystem::path& file);
// Same from JSON already in memory; `source` names it in messages.
SchedulerConfig scheduler_config_from_json(nlohmann::json j, const std::string& source);

// Pipeline options (not config keys).
struct SchedulerOptions {
  double eta = 0.0;            // DDIM eta (variance noise from the step's generator); ignored by
                               // the other classes, as the diffusers pipelines do
  std::optional<bool> karras;  // overrides use_karras_sigmas (Euler, DPM-Solver++); true on another
                               // class is a UsageError
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // Computes the timesteps for `num_inference_steps` (1..num_train_timesteps, else InputError) and
  // resets the run state.
  virtual void set_timesteps(std::int64_t num_inference_steps) = 0;
  // The pipeline's loop, one UNet call each (PNDM: may be longer than the number of steps).
  const std::vector<double>& timesteps() const { return timesteps_; }
  std::int64_t num_inference_steps() const { return num_inference_steps_; }

  // The initial noise is randn * init_noise_sigma() (after set_timesteps; a float32 value).
  virtual double init_noise_sigma() const { return 1.0; }
  // sample: [B, C, h, w]; t: the current entry of timesteps().
  virtual torch::Tensor scale_model_input(const torch::Tensor& sample, double t) { return sample; }
  // One denoising step: model_output and sample [B, C, h, w] float32 -> the previous sample.
  // gen: CPU generator for stochastic steps (Euler ancestral, DDIM eta > 0); nullptr = torch's
  // default generator. RuntimeError when called before set_timesteps or with a t not in timesteps().
  virtual torch::Tensor step(const torch::Tensor& model_output, double t, const torch::Tensor& sample,
                             at::Generator* gen = nullptr) = 0;
  // original, noise: [B, ...]; t: an entry of timesteps() (PNDM/DDIM: any training timestep).
  virtual torch::Tensor add_noise(const torch::Tensor& original, const torch::Tensor& noise, double t) const = 0;

  virtual SchedulerKind kind() const = 0;
  virtual std::string class_name() const = 0;  // "PNDMScheduler", ...
  // The effective configuration: `_class_name` and every key of the class with the value in use
  // (file or default), plus the options that apply (eta); for provenance and --json.
  const nlohmann::json& describe() const { return describe_; }

  // Schedule tensors (CPU float32): alphas_cumprod [num_train_timesteps]; sigmas [len+1] after
  // set_timesteps for the sigma-based classes (Euler, Euler ancestral, DPM), undefined otherwise.
  const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }
  const torch::Tensor& sigmas() const { return sigmas_; }

 protected:
  std::vector<double> timesteps_;
  std::int64_t num_inference_steps_ = 0;
  torch::Tensor alphas_cumprod_;  // [num_train_timesteps] float32
  torch::Tensor sigmas_;          // float32
  nlohmann::json describe_;
};

// The scheduler of `cfg` (kind = nullopt: its `_class_name`, ModelError when absent or not one of
// the five classes), or of `kind` built from cfg as diffusers' from_config does.
std::unique_ptr<Scheduler> make_scheduler(const SchedulerConfig& cfg, std::optional<SchedulerKind> kind = {},
                                          const SchedulerOptions& opts = {});

}  // namespace lli::schedulers
