// Ref: diffusers 0.31 schedulers/scheduling_euler_discrete.py (EulerDiscreteScheduler) and
//      scheduling_euler_ancestral_discrete.py (EulerAncestralDiscreteScheduler): set_timesteps,
//      init_noise_sigma, scale_model_input, index_for_timestep, step, add_noise.
//
// Both work on sigma = sqrt((1 - ac) / ac): the sample lives at scale sqrt(sigma^2 + 1) (the UNet
// input is divided by it), timesteps are float32 values (fractional with `linspace` spacing or
// Karras sigmas). The step index is found from the first timestep seen (the second match when a
// timestep repeats) and then advances by one per step.
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "lli/error.h"
#include "schedulers/schedule_util.h"

namespace lli::schedulers::detail {

namespace {

// The float32 timesteps of both classes for a spacing (descending).
std::vector<float> euler_timesteps(TimestepSpacing spacing, std::int64_t N, std::int64_t n, std::int64_t steps_offset) {
  std::vector<float> ts;
  switch (spacing) {
    case TimestepSpacing::linspace: {
      const auto v = np_linspace(0, static_cast<double>(N - 1), n);
      for (auto it = v.rbegin(); it != v.rend(); ++it) ts.push_back(static_cast<float>(*it));
      break;
    }
    case TimestepSpacing::leading:
      for (std::int64_t i = n - 1; i >= 0; --i)
        ts.push_back(static_cast<float>(i * (N / n)) + static_cast<float>(steps_offset));
      break;
    case TimestepSpacing::trailing:
      for (double v : np_arange(static_cast<double>(N), 0, -static_cast<double>(N) / static_cast<double>(n)))
        ts.push_back(static_cast<float>(np_round(v)) - 1.0f);
      break;
  }
  return ts;
}

// What Euler and Euler ancestral share: betas, sigma table, step index, input scaling, add_noise.
class SigmaScheduler : public Scheduler {
 public:
  double init_noise_sigma() const override {
    auto max_sigma = sigmas_.max();
    if (spacing_ == TimestepSpacing::linspace || spacing_ == TimestepSpacing::trailing) return max_sigma.item<double>();
    return (max_sigma.pow(2) + 1).pow(0.5).item<double>();
  }

  torch::Tensor scale_model_input(const torch::Tensor& sample, double t) override {
    if (!step_index_) step_index_ = index_for_timestep(t);
    auto sigma = sigma_at(*step_index_);
    return sample / (sigma.pow(2) + 1).pow(0.5);
  }

  torch::Tensor add_noise(const torch::Tensor& original, const torch::Tensor& noise, double t) const override {
    auto sigma = sigma_at(index_for_timestep(t)).to(original.device(), original.scalar_type());
    return original + noise * sigma;
  }

 protected:
  SigmaScheduler() = default;

  // The schedule as __init__: alphas_cumprod (the last one 2^-24 with the zero-SNR rescale) and
  // the training sigmas, descending, with a final 0.
  void init_schedule(const BetaConfig& b) {
    betas_cfg_ = b;
    alphas_cumprod_ = alphas_cumprod_of(make_betas(b));
    if (b.rescale_betas_zero_snr) alphas_cumprod_[-1] = std::ldexp(1.0, -24);
    sigmas_ = torch::cat({training_sigmas(alphas_cumprod_).flip(0), torch::zeros({1}, torch::kFloat32)});
  }

  // The float32 timesteps of the spacing for n steps (descending).
  std::vector<float> spaced_timesteps(std::int64_t n) const {
    check_num_steps(n, betas_cfg_.num_train_timesteps, class_name());
    return euler_timesteps(spacing_, betas_cfg_.num_train_timesteps, n, steps_offset_);
  }

  void reset_run_state(std::int64_t n, std::vector<float> ts) {
    num_inference_steps_ = n;
    timesteps_f32_ = std::move(ts);
    timesteps_.assign(timesteps_f32_.begin(), timesteps_f32_.end());
    step_index_.reset();
  }

  // index_for_timestep: the second match when t repeats, so that a schedule entered halfway does
  // not skip a sigma.
  std::int64_t index_for_timestep(double t) const {
    if (num_inference_steps_ == 0) throw RuntimeError(class_name() + ": used before set_timesteps()");
    const auto tf = static_cast<float>(t);
    std::vector<std::int64_t> hits;
    for (std::size_t i = 0; i < timesteps_f32_.size(); ++i)
      if (timesteps_f32_[i] == tf) hits.push_back(static_cast<std::int64_t>(i));
    if (hits.empty()) throw RuntimeError(fmt::format("{}: timestep {} is not in the schedule", class_name(), t));
    return hits[hits.size() > 1 ? 1 : 0];
  }

  torch::Tensor sigma_at(std::int64_t i) const {
    if (i < 0 || i >= sigmas_.size(0))
      throw RuntimeError(
          fmt::format("{}: step {} past the end of the schedule ({} sigmas)", class_name(), i, sigmas_.size(0)));
    return sigmas_[i];  // 0-dim float32
  }

  // The step's index (initialised from t on the first call) and the sigmas around it.
  std::int64_t begin_step(double t) {
    if (num_inference_steps_ == 0) throw RuntimeError(class_name() + ": step() before set_timesteps()");
    if (!step_index_) step_index_ = index_for_timestep(t);
    (void)sigma_at(*step_index_ + 1);
    return *step_index_;
  }

  BetaConfig betas_cfg_;
  PredictionType prediction_ = PredictionType::epsilon;
  TimestepSpacing spacing_ = TimestepSpacing::linspace;
  std::int64_t steps_offset_ = 0;
  std::vector<float> timesteps_f32_;
  std::optional<std::int64_t> step_index_;
};

// -------------------------------------------------------------------------------------------------
class EulerDiscreteScheduler final : public SigmaScheduler {
 public:
  EulerDiscreteScheduler(const SchedulerConfig& cfg, const SchedulerOptions& opts) {
    ClassConfig c(cfg, class_name());
    auto b = read_beta_config(c, /*has_rescale_key=*/true);
    prediction_ = read_prediction_type(c, {"epsilon", "v_prediction", "sample", "original_sample"});
    log_linear_ = c.get_choice("interpolation_type", "linear", {"linear", "log_linear"}) == "log_linear";
    karras_ = c.get_bool("use_karras_sigmas", false);
    exponential_ = c.get_bool("use_exponential_sigmas", false);
    if (c.get_bool("use_beta_sigmas", false))
      c.refuse("use_beta_sigmas", "beta sigmas (scipy.stats.beta.ppf) are not implemented");
    sigma_min_ = c.get_optional_double("sigma_min");
    sigma_max_ = c.get_optional_double("sigma_max");
    spacing_ = read_timestep_spacing(c, "linspace");
    continuous_ = c.get_choice("timestep_type", "discrete", {"discrete", "continuous"}) == "continuous";
    steps_offset_ = c.get_int("steps_offset", 0);
    final_sigma_min_ = c.get_choice("final_sigmas_type", "zero", {"zero", "sigma_min"}) == "sigma_min";
    if (opts.karras) karras_ = *opts.karras;
    if (karras_ && exponential_)
      c.refuse("use_exponential_sigmas", "only one of use_karras_sigmas and use_exponential_sigmas can be used");
    c.log_ignored_keys();
    describe_ = c.effective();
    describe_["use_karras_sigmas"] = karras_;
    init_schedule(b);
  }

  SchedulerKind kind() const override { return SchedulerKind::euler; }
  std::string class_name() const override { return "EulerDiscreteScheduler"; }

  void set_timesteps(std::int64_t n) override {
    auto ts32 = spaced_timesteps(n);
    const auto train_sigmas = training_sigmas(alphas_cumprod_);  // [N] float32, ascending
    const auto train = to_doubles(train_sigmas);
    const auto log_sigmas = log_sigmas_f32(train_sigmas);
    std::vector<double> sig;
    if (!log_linear_) {
      sig = np_interp(std::vector<double>(ts32.begin(), ts32.end()), train);
    } else {
      // torch.linspace(log(sigmas[-1]), log(sigmas[0]), n + 1).exp(): n + 1 sigmas, as the reference.
      sig = to_doubles(torch::linspace(static_cast<double>(log_sigmas.back()), static_cast<double>(log_sigmas.front()),
                                       n + 1, torch::kFloat32)
                           .exp());
    }
    std::vector<double> ts(ts32.begin(), ts32.end());
    if (karras_ || exponential_) {
      const double lo = sigma_min_.value_or(sig.back()), hi = sigma_max_.value_or(sig.front());
      if (karras_) {
        sig = karras_sigmas(lo, hi, n);
      } else {
        sig.clear();
        for (double l : np_linspace(std::log(hi), std::log(lo), n)) sig.push_back(std::exp(l));
      }
      ts.clear();
      for (double s : sig) ts.push_back(sigma_to_t(s, log_sigmas));
    }
    sig.push_back(final_sigma_min_ ? train.front() : 0.0);
    sigmas_ = torch::tensor(sig, torch::kFloat64).to(torch::kFloat32);
    std::vector<float> out;
    if (continuous_ && prediction_ == PredictionType::v_prediction) {
      for (std::int64_t i = 0; i + 1 < sigmas_.size(0); ++i) out.push_back((0.25 * sigmas_[i].log()).item<float>());
    } else {
      for (double t : ts) out.push_back(static_cast<float>(t));
    }
    reset_run_state(n, std::move(out));
  }

  torch::Tensor step(const torch::Tensor& model_output, double t, const torch::Tensor& sample_in,
                     at::Generator*) override {
    const auto i = begin_step(t);
    auto sample = sample_in.to(torch::kFloat32);
    auto sigma = sigma_at(i);
    // s_churn = 0 (the pipelines' default): gamma = 0, sigma_hat = sigma, no noise drawn.
    auto sigma_hat = sigma * (0.0 + 1);
    torch::Tensor pred_original_sample;
    switch (prediction_) {
      case PredictionType::sample:
        pred_original_sample = model_output;
        break;
      case PredictionType::epsilon:
        pred_original_sample = sample - sigma_hat * model_output;
        break;
      case PredictionType::v_prediction:
        pred_original_sample = model_output * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + sample / (sigma.pow(2) + 1);
        break;
    }
    auto derivative = (sample - pred_original_sample) / sigma_hat;
    auto dt = sigma_at(i + 1) - sigma_hat;
    auto prev_sample = sample + derivative * dt;
    *step_index_ += 1;
    return prev_sample.to(model_output.scalar_type());
  }

 private:
  bool log_linear_ = false, karras_ = false, exponential_ = false, continuous_ = false, final_sigma_min_ = false;
  std::optional<double> sigma_min_, sigma_max_;
};

// -------------------------------------------------------------------------------------------------
class EulerAncestralDiscreteScheduler final : public SigmaScheduler {
 public:
  EulerAncestralDiscreteScheduler(const SchedulerConfig& cfg, const SchedulerOptions&) {
    ClassConfig c(cfg, class_name());
    auto b = read_beta_config(c, /*has_rescale_key=*/true);
    prediction_ = read_prediction_type(c, {"epsilon", "v_prediction"});
    spacing_ = read_timestep_spacing(c, "linspace");
    steps_offset_ = c.get_int("steps_offset", 0);
    c.log_ignored_keys();
    describe_ = c.effective();
    init_schedule(b);
  }

  SchedulerKind kind() const override { return SchedulerKind::euler_ancestral; }
  std::string class_name() const override { return "EulerAncestralDiscreteScheduler"; }

  void set_timesteps(std::int64_t n) override {
    auto ts32 = spaced_timesteps(n);
    auto sig = np_interp(std::vector<double>(ts32.begin(), ts32.end()), to_doubles(training_sigmas(alphas_cumprod_)));
    sig.push_back(0.0);
    sigmas_ = torch::tensor(sig, torch::kFloat64).to(torch::kFloat32);
    reset_run_state(n, std::move(ts32));
  }

  torch::Tensor step(const torch::Tensor& model_output, double t, const torch::Tensor& sample_in,
                     at::Generator* gen) override {
    const auto i = begin_step(t);
    auto sigma = sigma_at(i);
    auto sample = sample_in.to(torch::kFloat32);
    torch::Tensor pred_original_sample;
    if (prediction_ == PredictionType::epsilon)
      pred_original_sample = sample - sigma * model_output;
    else  // v_prediction
      pred_original_sample = model_output * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + sample / (sigma.pow(2) + 1);
    auto sigma_from = sigma_at(i), sigma_to = sigma_at(i + 1);
    auto sigma_up = (sigma_to.pow(2) * (sigma_from.pow(2) - sigma_to.pow(2)) / sigma_from.pow(2)).pow(0.5);
    auto sigma_down = (sigma_to.pow(2) - sigma_up.pow(2)).pow(0.5);
    auto derivative = (sample - pred_original_sample) / sigma;
    auto dt = sigma_down - sigma;
    auto prev_sample = sample + derivative * dt;
    prev_sample = prev_sample + randn_like_from(model_output, gen) * sigma_up;
    *step_index_ += 1;
    return prev_sample.to(model_output.scalar_type());
  }
};

}  // namespace

std::unique_ptr<Scheduler> make_euler(const SchedulerConfig& cfg, const SchedulerOptions& opts) {
  return std::make_unique<EulerDiscreteScheduler>(cfg, opts);
}

std::unique_ptr<Scheduler> make_euler_ancestral(const SchedulerConfig& cfg, const SchedulerOptions& opts) {
  return std::make_unique<EulerAncestralDiscreteScheduler>(cfg, opts);
}

}  // namespace lli::schedulers::detail
