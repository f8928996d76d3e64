// Ref: diffusers 0.31 schedulers/scheduling_pndm.py (PNDMScheduler: set_timesteps, step_prk,
//      step_plms, _get_prev_sample, add_noise).
//
// PLMS (skip_prk_steps = true, Stable Diffusion's setting): n steps give n + 1 model calls, the
// second-to-last training timestep of the schedule is visited twice (the second call completes a
// Heun-like first step). PRK (skip_prk_steps = false): 12 Runge-Kutta calls over the last four
// timesteps of the schedule, then the 4th-order linear multistep method.
#include <fmt/format.h>
#include <torch/torch.h>

#include "lli/error.h"
#include "schedulers/schedule_util.h"

namespace lli::schedulers::detail {

namespace {

class PNDMScheduler final : public Scheduler {
 public:
  PNDMScheduler(const SchedulerConfig& cfg, const SchedulerOptions&) {
    ClassConfig c(cfg, class_name());
    betas_cfg_ = read_beta_config(c, /*has_rescale_key=*/false);
    skip_prk_steps_ = c.get_bool("skip_prk_steps", false);
    const bool set_alpha_to_one = c.get_bool("set_alpha_to_one", false);
    prediction_ = read_prediction_type(c, {"epsilon", "v_prediction"});
    spacing_ = read_timestep_spacing(c, "leading");
    steps_offset_ = c.get_int("steps_offset", 0);
    c.log_ignored_keys();
    describe_ = c.effective();

    alphas_cumprod_ = alphas_cumprod_of(make_betas(betas_cfg_));
    final_alpha_cumprod_ = set_alpha_to_one ? torch::tensor(1.0, torch::kFloat32) : alphas_cumprod_[0].clone();
  }

  SchedulerKind kind() const override { return SchedulerKind::pndm; }
  std::string class_name() const override { return "PNDMScheduler"; }

  void set_timesteps(std::int64_t n) override {
    const auto N = betas_cfg_.num_train_timesteps;
    check_num_steps(n, N, class_name());
    if (!skip_prk_steps_ && n < kOrder)
      throw InputError(
          fmt::format("PNDMScheduler with skip_prk_steps false needs at least {} inference steps, got {}", kOrder, n));
    num_inference_steps_ = n;
    // _timesteps: ascending.
    std::vector<std::int64_t> ts;
    switch (spacing_) {
      case TimestepSpacing::linspace:
        for (double v : np_linspace(0, static_cast<double>(N - 1), n))
          ts.push_back(static_cast<std::int64_t>(np_round(v)));
        break;
      case TimestepSpacing::leading:
        for (std::int64_t i = 0; i < n; ++i) ts.push_back(i * (N / n) + steps_offset_);
        break;
      case TimestepSpacing::trailing: {
        const auto a = np_arange(static_cast<double>(N), 0, -static_cast<double>(N) / static_cast<double>(n));
        for (auto it = a.rbegin(); it != a.rend(); ++it) ts.push_back(static_cast<std::int64_t>(np_round(*it)) - 1);
        break;
      }
    }
    prk_timesteps_.clear();
    std::vector<std::int64_t> plms;
    if (skip_prk_steps_) {
      // concatenate([ts[:-1], ts[-2:-1], ts[-1:]])[::-1]
      std::vector<std::int64_t> cat(ts.begin(), ts.end() - 1);
      if (ts.size() >= 2) cat.push_back(ts[ts.size() - 2]);
      cat.push_back(ts.back());
      plms.assign(cat.rbegin(), cat.rend());
    } else {
      // (ts[-4:].repeat(2) + tile([0, N // n // 2], 4))[:-1].repeat(2)[1:-1][::-1]
      const std::int64_t half = N / n / 2;
      std::vector<std::int64_t> prk;
      for (std::size_t i = ts.size() - kOrder; i < ts.size(); ++i) {
        prk.push_back(ts[i]);
        prk.push_back(ts[i] + half);
      }
      prk.pop_back();
      std::vector<std::int64_t> rep;
      for (auto v : prk) rep.insert(rep.end(), {v, v});
      prk_timesteps_.assign(rep.rbegin() + 1, rep.rend() - 1);
      plms.assign(ts.rbegin() + 3, ts.rend());  // ts[:-3][::-1]
    }
    timesteps_.clear();
    for (auto v : prk_timesteps_) timesteps_.push_back(static_cast<double>(v));
    for (auto v : plms) timesteps_.push_back(static_cast<double>(v));
    for (double t : timesteps_)
      if (t < 0 || t >= static_cast<double>(N))
        throw InputError(fmt::format("PNDMScheduler: timestep {} outside 0..{} (steps_offset {} with {} steps)", t,
                                     N - 1, steps_offset_, n));
    ets_.clear();
    counter_ = 0;
    cur_model_output_ = torch::Tensor();
    cur_sample_ = torch::Tensor();
  }

  torch::Tensor step(const torch::Tensor& model_output, double t, const torch::Tensor& sample,
                     at::Generator*) override {
    if (num_inference_steps_ == 0) throw RuntimeError("PNDMScheduler: step() before set_timesteps()");
    const auto ti = integral_timestep(t, "PNDMScheduler step");
    if (counter_ < static_cast<std::int64_t>(prk_timesteps_.size()) && !skip_prk_steps_)
      return step_prk(model_output, ti, sample);
    return step_plms(model_output, ti, sample);
  }

  torch::Tensor add_noise(const torch::Tensor& original, const torch::Tensor& noise, double t) const override {
    return add_noise_vp(alphas_cumprod_, original, noise, integral_timestep(t, "PNDMScheduler add_noise"));
  }

 private:
  static constexpr std::int64_t kOrder = 4;  // pndm_order

  torch::Tensor step_prk(const torch::Tensor& model_output_in, std::int64_t timestep, const torch::Tensor& sample) {
    const auto N = betas_cfg_.num_train_timesteps;
    const std::int64_t diff_to_prev = counter_ % 2 ? 0 : N / num_inference_steps_ / 2;
    const std::int64_t prev_timestep = timestep - diff_to_prev;
    timestep = prk_timesteps_[static_cast<std::size_t>(counter_ / 4 * 4)];
    auto model_output = model_output_in;
    const auto accumulate = [&](double w) {
      auto term = w * model_output;
      cur_model_output_ = cur_model_output_.defined() ? cur_model_output_ + term : 0 + term;
    };
    if (counter_ % 4 == 0) {
      accumulate(1.0 / 6);
      ets_.push_back(model_output);
      cur_sample_ = sample;
    } else if ((counter_ - 1) % 4 == 0 || (counter_ - 2) % 4 == 0) {
      accumulate(1.0 / 3);
    } else {
      auto term = 1.0 / 6 * model_output;
      model_output = cur_model_output_.defined() ? cur_model_output_ + term : 0 + term;
      cur_model_output_ = torch::Tensor();
    }
    const auto& cur_sample = cur_sample_.defined() ? cur_sample_ : sample;
    auto prev = prev_sample(cur_sample, timestep, prev_timestep, model_output);
    ++counter_;
    return prev;
  }

  torch::Tensor step_plms(const torch::Tensor& model_output_in, std::int64_t timestep, const torch::Tensor& sample_in) {
    const auto N = betas_cfg_.num_train_timesteps;
    if (!skip_prk_steps_ && ets_.size() < 3)
      throw RuntimeError("PNDMScheduler: PLMS steps need the 12 Runge-Kutta steps first");
    std::int64_t prev_timestep = timestep - N / num_inference_steps_;
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
      ets_.push_back(model_output_in);
    } else {
      prev_timestep = timestep;
      timestep = timestep + N / num_inference_steps_;
    }
    auto model_output = model_output_in;
    auto sample = sample_in;
    const auto e = [&](std::size_t back) -> const torch::Tensor& { return ets_[ets_.size() - back]; };
    if (ets_.size() == 1 && counter_ == 0) {
      cur_sample_ = sample;
    } else if (ets_.size() == 1 && counter_ == 1) {
      model_output = (model_output + e(1)) / 2;
      sample = cur_sample_;
      cur_sample_ = torch::Tensor();
    } else if (ets_.size() == 2) {
      model_output = (3 * e(1) - e(2)) / 2;
    } else if (ets_.size() == 3) {
      model_output = (23 * e(1) - 16 * e(2) + 5 * e(3)) / 12;
    } else {
      model_output = (1.0 / 24) * (55 * e(1) - 59 * e(2) + 37 * e(3) - 9 * e(4));
    }
    auto prev = prev_sample(sample, timestep, prev_timestep, model_output);
    ++counter_;
    return prev;
  }

  // Formula (9) of the PNDM paper: x_{t-d} from x_t and the (combined) noise estimate.
  torch::Tensor prev_sample(const torch::Tensor& sample, std::int64_t timestep, std::int64_t prev_timestep,
                            torch::Tensor model_output) const {
    const auto N = alphas_cumprod_.size(0);
    if (timestep < 0 || timestep >= N || prev_timestep >= N)
      throw RuntimeError(fmt::format("PNDMScheduler: timestep {} outside 0..{}", timestep, N - 1));
    auto alpha_prod_t = alphas_cumprod_[timestep];  // 0-dim float32
    auto alpha_prod_t_prev = prev_timestep >= 0 ? alphas_cumprod_[prev_timestep] : final_alpha_cumprod_;
    auto beta_prod_t = 1 - alpha_prod_t;
    auto beta_prod_t_prev = 1 - alpha_prod_t_prev;
    if (prediction_ == PredictionType::v_prediction)
      model_output = alpha_prod_t.pow(0.5) * model_output + beta_prod_t.pow(0.5) * sample;
    auto sample_coeff = (alpha_prod_t_prev / alpha_prod_t).pow(0.5);
    auto denom = alpha_prod_t * beta_prod_t_prev.pow(0.5) + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).pow(0.5);
    return sample_coeff * sample - (alpha_prod_t_prev - alpha_prod_t) * model_output / denom;
  }

  BetaConfig betas_cfg_;
  bool skip_prk_steps_ = false;
  PredictionType prediction_ = PredictionType::epsilon;
  TimestepSpacing spacing_ = TimestepSpacing::leading;
  std::int64_t steps_offset_ = 0;
  torch::Tensor final_alpha_cumprod_;

  // Run state.
  std::vector<std::int64_t> prk_timesteps_;
  std::vector<torch::Tensor> ets_;
  std::int64_t counter_ = 0;
  torch::Tensor cur_model_output_;  // undefined = 0
  torch::Tensor cur_sample_;        // undefined = None
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm(const SchedulerConfig& cfg, const SchedulerOptions& opts) {
  return std::make_unique<PNDMScheduler>(cfg, opts);
}

}  // namespace lli::schedulers::detail
