// Ref: diffusers 0.31 schedulers/scheduling_ddim.py (DDIMScheduler: set_timesteps, _get_variance,
//      step, add_noise).
//
// As the reference, the previous timestep of a step is t - num_train_timesteps // n whatever the
// spacing, and with eta > 0 the variance noise is drawn from the step's generator.
#include <fmt/format.h>
#include <torch/torch.h>

#include "lli/error.h"
#include "schedulers/schedule_util.h"

namespace lli::schedulers::detail {

namespace {

class DDIMScheduler final : public Scheduler {
 public:
  DDIMScheduler(const SchedulerConfig& cfg, const SchedulerOptions& opts) : eta_(opts.eta) {
    ClassConfig c(cfg, class_name());
    betas_cfg_ = read_beta_config(c, /*has_rescale_key=*/true);
    clip_sample_ = c.get_bool("clip_sample", true);
    const bool set_alpha_to_one = c.get_bool("set_alpha_to_one", true);
    steps_offset_ = c.get_int("steps_offset", 0);
    prediction_ = read_prediction_type(c, {"epsilon", "v_prediction", "sample"});
    thresholding_ = c.get_bool("thresholding", false);
    dynamic_thresholding_ratio_ = c.get_double("dynamic_thresholding_ratio", 0.995);
    clip_sample_range_ = c.get_double("clip_sample_range", 1.0);
    sample_max_value_ = c.get_double("sample_max_value", 1.0);
    spacing_ = read_timestep_spacing(c, "leading");
    if (thresholding_ && !(dynamic_thresholding_ratio_ > 0 && dynamic_thresholding_ratio_ <= 1))
      c.refuse("dynamic_thresholding_ratio", "must be in (0, 1]");
    c.log_ignored_keys();
    describe_ = c.effective();
    describe_["eta"] = eta_;

    alphas_cumprod_ = alphas_cumprod_of(make_betas(betas_cfg_));
    final_alpha_cumprod_ = set_alpha_to_one ? torch::tensor(1.0, torch::kFloat32) : alphas_cumprod_[0].clone();
  }

  SchedulerKind kind() const override { return SchedulerKind::ddim; }
  std::string class_name() const override { return "DDIMScheduler"; }

  void set_timesteps(std::int64_t n) override {
    const auto N = betas_cfg_.num_train_timesteps;
    check_num_steps(n, N, class_name());
    num_inference_steps_ = n;
    timesteps_.clear();
    switch (spacing_) {
      case TimestepSpacing::linspace: {
        const auto v = np_linspace(0, static_cast<double>(N - 1), n);
        for (auto it = v.rbegin(); it != v.rend(); ++it) timesteps_.push_back(np_round(*it));
        break;
      }
      case TimestepSpacing::leading:
        for (std::int64_t i = n - 1; i >= 0; --i)
          timesteps_.push_back(static_cast<double>(i * (N / n) + steps_offset_));
        break;
      case TimestepSpacing::trailing:
        for (double v : np_arange(static_cast<double>(N), 0, -static_cast<double>(N) / static_cast<double>(n)))
          timesteps_.push_back(np_round(v) - 1);
        break;
    }
    for (double t : timesteps_)
      if (t < 0 || t >= static_cast<double>(N))
        throw InputError(fmt::format("DDIMScheduler: timestep {} outside 0..{} (steps_offset {} with {} steps)", t,
                                     N - 1, steps_offset_, n));
  }

  torch::Tensor step(const torch::Tensor& model_output, double t, const torch::Tensor& sample,
                     at::Generator* gen) override {
    if (num_inference_steps_ == 0) throw RuntimeError("DDIMScheduler: step() before set_timesteps()");
    const auto timestep = integral_timestep(t, "DDIMScheduler step");
    const auto N = alphas_cumprod_.size(0);
    if (timestep < 0 || timestep >= N)
      throw RuntimeError(fmt::format("DDIMScheduler: timestep {} outside 0..{}", timestep, N - 1));
    // 1. previous step value
    const std::int64_t prev_timestep = timestep - betas_cfg_.num_train_timesteps / num_inference_steps_;
    // 2. alphas, betas (0-dim float32)
    auto alpha_prod_t = alphas_cumprod_[timestep];
    auto alpha_prod_t_prev = prev_timestep >= 0 ? alphas_cumprod_[prev_timestep] : final_alpha_cumprod_;
    auto beta_prod_t = 1 - alpha_prod_t;
    // 3. predicted x_0 and noise
    torch::Tensor pred_original_sample, pred_epsilon;
    switch (prediction_) {
      case PredictionType::epsilon:
        pred_original_sample = (sample - beta_prod_t.pow(0.5) * model_output) / alpha_prod_t.pow(0.5);
        pred_epsilon = model_output;
        break;
      case PredictionType::sample:
        pred_original_sample = model_output;
        pred_epsilon = (sample - alpha_prod_t.pow(0.5) * pred_original_sample) / beta_prod_t.pow(0.5);
        break;
      case PredictionType::v_prediction:
        pred_original_sample = alpha_prod_t.pow(0.5) * sample - beta_prod_t.pow(0.5) * model_output;
        pred_epsilon = alpha_prod_t.pow(0.5) * model_output + beta_prod_t.pow(0.5) * sample;
        break;
    }
    // 4. clip or threshold x_0
    if (thresholding_)
      pred_original_sample = threshold_sample(pred_original_sample, dynamic_thresholding_ratio_, sample_max_value_);
    else if (clip_sample_)
      pred_original_sample = pred_original_sample.clamp(-clip_sample_range_, clip_sample_range_);
    // 5. sigma_t(eta), formula (16)
    auto beta_prod_t_prev = 1 - alpha_prod_t_prev;
    auto variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev);
    auto std_dev_t = eta_ * variance.pow(0.5);
    // 6. direction pointing to x_t, formula (12)
    auto pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t.pow(2)).pow(0.5) * pred_epsilon;
    // 7. x_{t-1} without the random noise
    auto prev_sample = alpha_prod_t_prev.pow(0.5) * pred_original_sample + pred_sample_direction;
    if (eta_ > 0) prev_sample = prev_sample + std_dev_t * randn_like_from(model_output, gen);
    return prev_sample;
  }

  torch::Tensor add_noise(const torch::Tensor& original, const torch::Tensor& noise, double t) const override {
    return add_noise_vp(alphas_cumprod_, original, noise, integral_timestep(t, "DDIMScheduler add_noise"));
  }

 private:
  double eta_ = 0.0;
  BetaConfig betas_cfg_;
  bool clip_sample_ = true;
  std::int64_t steps_offset_ = 0;
  PredictionType prediction_ = PredictionType::epsilon;
  bool thresholding_ = false;
  double dynamic_thresholding_ratio_ = 0.995, clip_sample_range_ = 1.0, sample_max_value_ = 1.0;
  TimestepSpacing spacing_ = TimestepSpacing::leading;
  torch::Tensor final_alpha_cumprod_;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim(const SchedulerConfig& cfg, const SchedulerOptions& opts) {
  return std::make_unique<DDIMScheduler>(cfg, opts);
}

}  // namespace lli::schedulers::detail
