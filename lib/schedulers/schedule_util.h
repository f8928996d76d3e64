// Internal to lib/schedulers: the from_config view of a scheduler_config.json for one class, the
// shared noise-schedule pieces (betas, alphas_cumprod, thresholding, DDPM-style add_noise) and the
// numpy float64 routines diffusers uses for timesteps and sigmas, reproduced operation by operation.
//
// Ref: diffusers 0.31 configuration_utils.py (extract_init_dict), scheduling_ddpm.py
//      (betas_for_alpha_bar, _threshold_sample, add_noise), scheduling_ddim.py
//      (rescale_zero_terminal_snr), scheduling_euler_discrete.py (_sigma_to_t, _convert_to_karras);
//      numpy 1.24 linspace / arange / interp / round.
#pragma once

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/config_json.h"
#include "schedulers/scheduler.h"

namespace lli::schedulers::detail {

// The keys of one class read from the file with that class's defaults (from_config semantics).
// Every value read is recorded for describe(); ModelError "<file>: <key>: ..." on bad values.
class ClassConfig {
 public:
  ClassConfig(const SchedulerConfig& cfg, std::string class_name);

  std::int64_t get_int(const std::string& key, std::int64_t def);
  // allow_infinite: also +-Infinity (written by Python's json as bare Infinity / -Infinity).
  double get_double(const std::string& key, double def, bool allow_infinite = false);
  bool get_bool(const std::string& key, bool def);
  // A string that must be one of `allowed` (ModelError listing them otherwise).
  std::string get_choice(const std::string& key, const std::string& def, std::initializer_list<const char*> allowed);
  std::optional<double> get_optional_double(const std::string& key);   // null/absent -> nullopt
  bool has(const std::string& key) const { return reader_.has(key); }  // present and not null
  std::optional<std::vector<double>> get_optional_doubles(const std::string& key);
  // ModelError "<file>: <key> = <value>: <why> (<class>)".
  [[noreturn]] void refuse(const std::string& key, const std::string& why) const;
  std::string where(const std::string& key) const { return reader_.where(key); }
  const std::string& class_name() const { return class_name_; }
  // The effective config: `_class_name` and every key read, in reading order.
  nlohmann::json effective() const;
  // Logs the file's keys the class does not know (diffusers ignores them with a warning).
  void log_ignored_keys() const;

 private:
  void record(const std::string& key, nlohmann::json value);
  std::string class_name_;
  std::shared_ptr<const nlohmann::json> visible_;  // the file less private / default-marked keys
  models::ConfigReader reader_;
  nlohmann::json effective_ = nlohmann::json::object();
  std::vector<std::string> read_;
};

enum class BetaSchedule { linear, scaled_linear, squaredcos_cap_v2 };
enum class PredictionType { epsilon, v_prediction, sample };
enum class TimestepSpacing { leading, linspace, trailing };

// The betas keys every class shares (class defaults: num_train_timesteps 1000, beta_start 1e-4,
// beta_end 0.02, linear). rescale_betas_zero_snr only for the classes that have the key.
struct BetaConfig {
  std::int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001, beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::linear;
  std::optional<std::vector<double>> trained_betas;
  bool rescale_betas_zero_snr = false;
};
BetaConfig read_beta_config(ClassConfig& c, bool has_rescale_key);
// betas [num_train_timesteps] float32 as the class __init__ (trained_betas, else the schedule;
// then the zero-terminal-SNR rescale when asked).
torch::Tensor make_betas(const BetaConfig& b);
// cumprod(1 - betas) float32.
torch::Tensor alphas_cumprod_of(const torch::Tensor& betas);

PredictionType read_prediction_type(ClassConfig& c, std::initializer_list<const char*> allowed);
TimestepSpacing read_timestep_spacing(ClassConfig& c, const char* def);

// InputError unless 1 <= n <= num_train_timesteps.
void check_num_steps(std::int64_t n, std::int64_t num_train_timesteps, const std::string& class_name);

// Dynamic thresholding (Imagen): per sample, s = clamp(quantile(|x|, ratio), 1, max); x -> clamp(x,
// -s, s) / s. x: [B, C, ...].
torch::Tensor threshold_sample(const torch::Tensor& x, double ratio, double sample_max_value);

// sqrt(ac[t]) * original + sqrt(1 - ac[t]) * noise (DDPM add_noise, PNDM and DDIM).
torch::Tensor add_noise_vp(const torch::Tensor& alphas_cumprod, const torch::Tensor& original,
                           const torch::Tensor& noise, std::int64_t t);

// An integral timestep from a double (RuntimeError naming `what` otherwise).
std::int64_t integral_timestep(double t, const std::string& what);

// Standard normal noise like `like` (shape, float32) from gen (nullptr: torch's default), drawn on
// the CPU as diffusers' randn_tensor does for a CPU generator, then moved to like's device.
torch::Tensor randn_like_from(const torch::Tensor& like, at::Generator* gen);

// --- numpy float64 routines -------------------------------------------------------------------
std::vector<double> np_linspace(double start, double stop, std::int64_t num);
// np.arange(start, stop, step) of doubles (numpy fills start + i * (start + step - start)).
std::vector<double> np_arange(double start, double stop, double step);
// np.interp(x, arange(len(fp)), fp).
std::vector<double> np_interp(const std::vector<double>& x, const std::vector<double>& fp);
double np_round(double x);                               // half to even
std::vector<double> to_doubles(const torch::Tensor& t);  // any CPU tensor, flattened
// sqrt((1 - ac) / ac) float32 (torch), the training sigmas in ascending t.
torch::Tensor training_sigmas(const torch::Tensor& alphas_cumprod);
// log of each training sigma as numpy does on a float32 array (float32 results).
std::vector<float> log_sigmas_f32(const torch::Tensor& sigmas);
// _sigma_to_t: the fractional training timestep of `sigma` by interpolation in log sigma.
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas);
// _convert_to_karras: n sigmas (rho 7) from sigma_max down to sigma_min.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, std::int64_t n);

// --- the classes (pndm.cpp, ddim.cpp, euler.cpp, dpm_solver.cpp) ------------------------------
std::unique_ptr<Scheduler> make_pndm(const SchedulerConfig& cfg, const SchedulerOptions& opts);
std::unique_ptr<Scheduler> make_ddim(const SchedulerConfig& cfg, const SchedulerOptions& opts);
std::unique_ptr<Scheduler> make_euler(const SchedulerConfig& cfg, const SchedulerOptions& opts);
std::unique_ptr<Scheduler> make_euler_ancestral(const SchedulerConfig& cfg, const SchedulerOptions& opts);
std::unique_ptr<Scheduler> make_dpm_solver(const SchedulerConfig& cfg, const SchedulerOptions& opts);

}  // namespace lli::schedulers::detail
