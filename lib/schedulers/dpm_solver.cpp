// Ref: diffusers 0.31 schedulers/scheduling_dpmsolver_multistep.py (DPMSolverMultistepScheduler:
//      __init__, set_timesteps, convert_model_output, dpm_solver_first_order_update,
//      multistep_dpm_solver_{second,third}_order_update, index_for_timestep, step, add_noise).
//
// DPM-Solver++ (algorithm_type dpmsolver++, the data-prediction solver) of order 1-3 with the
// midpoint or Heun second-order rule; the first step is first order, and with lower_order_final
// (fewer than 15 steps) the last two steps drop to orders 1 and 2; the last step is first order
// whenever the final sigma is 0 (final_sigmas_type "zero"). The SDE variants and the deprecated
// noise-prediction solver ("dpmsolver") are refused.
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "lli/error.h"
#include "schedulers/schedule_util.h"

namespace lli::schedulers::detail {

namespace {

class DPMSolverMultistepScheduler final : public Scheduler {
 public:
  DPMSolverMultistepScheduler(const SchedulerConfig& cfg, const SchedulerOptions& opts) {
    ClassConfig c(cfg, class_name());
    betas_cfg_ = read_beta_config(c, /*has_rescale_key=*/true);
    solver_order_ = c.get_int("solver_order", 2);
    if (solver_order_ < 1 || solver_order_ > 3) c.refuse("solver_order", "must be 1, 2 or 3");
    prediction_ = read_prediction_type(c, {"epsilon", "sample", "v_prediction"});
    thresholding_ = c.get_bool("thresholding", false);
    dynamic_thresholding_ratio_ = c.get_double("dynamic_thresholding_ratio", 0.995);
    sample_max_value_ = c.get_double("sample_max_value", 1.0);
    if (thresholding_ && !(dynamic_thresholding_ratio_ > 0 && dynamic_thresholding_ratio_ <= 1))
      c.refuse("dynamic_thresholding_ratio", "must be in (0, 1]");
    // "deis" is registered as dpmsolver++ by the reference; the other algorithms are not implemented.
    const auto algo = c.get_choice("algorithm_type", "dpmsolver++",
                                   {"dpmsolver++", "deis", "dpmsolver", "sde-dpmsolver", "sde-dpmsolver++"});
    if (algo != "dpmsolver++" && algo != "deis")
      c.refuse("algorithm_type", "only dpmsolver++ (DPM-Solver++) is implemented");
    // logrho / bh1 / bh2 (UniPC / DEIS names) are registered as midpoint by the reference.
    heun_ = c.get_choice("solver_type", "midpoint", {"midpoint", "heun", "logrho", "bh1", "bh2"}) == "heun";
    lower_order_final_ = c.get_bool("lower_order_final", true);
    euler_at_final_ = c.get_bool("euler_at_final", false);
    karras_ = c.get_bool("use_karras_sigmas", false);
    if (c.get_bool("use_exponential_sigmas", false))
      c.refuse("use_exponential_sigmas", "exponential sigmas are not implemented for DPMSolverMultistepScheduler");
    if (c.get_bool("use_beta_sigmas", false))
      c.refuse("use_beta_sigmas", "beta sigmas (scipy.stats.beta.ppf) are not implemented");
    lu_lambdas_ = c.get_bool("use_lu_lambdas", false);
    final_sigma_min_ = c.get_choice("final_sigmas_type", "zero", {"zero", "sigma_min"}) == "sigma_min";
    lambda_min_clipped_ = c.get_double("lambda_min_clipped", -INFINITY, /*allow_infinite=*/true);
    if (c.has("variance_type"))
      c.refuse("variance_type", "models that predict their variance (learned, learned_range) are not supported");
    spacing_ = read_timestep_spacing(c, "linspace");
    steps_offset_ = c.get_int("steps_offset", 0);
    // Not keys of this class, but the reference's Karras conversion reads them from the config when
    // the file has them (from_config registers unknown keys as hidden config attributes).
    sigma_min_ = c.get_optional_double("sigma_min");
    sigma_max_ = c.get_optional_double("sigma_max");
    if (opts.karras) karras_ = *opts.karras;
    c.log_ignored_keys();
    describe_ = c.effective();
    describe_["use_karras_sigmas"] = karras_;

    alphas_cumprod_ = alphas_cumprod_of(make_betas(betas_cfg_));
    if (betas_cfg_.rescale_betas_zero_snr) alphas_cumprod_[-1] = std::ldexp(1.0, -24);
    auto alpha_t = torch::sqrt(alphas_cumprod_), sigma_t = torch::sqrt(1 - alphas_cumprod_);
    lambda_t_ = torch::log(alpha_t) - torch::log(sigma_t);
  }

  SchedulerKind kind() const override { return SchedulerKind::dpmpp_2m; }
  std::string class_name() const override { return "DPMSolverMultistepScheduler"; }

  void set_timesteps(std::int64_t n) override {
    const auto N = betas_cfg_.num_train_timesteps;
    check_num_steps(n, N, class_name());
    // Clipping the minimum of lambda(t) (cosine schedules).
    const auto clipped_idx = torch::searchsorted(lambda_t_.flip(0), lambda_min_clipped_).item<std::int64_t>();
    const std::int64_t last_timestep = N - clipped_idx;
    std::vector<double> ts;
    switch (spacing_) {
      case TimestepSpacing::linspace: {
        auto v = np_linspace(0, static_cast<double>(last_timestep - 1), n + 1);
        for (std::int64_t i = n; i >= 1; --i) ts.push_back(np_round(v[static_cast<std::size_t>(i)]));
        break;
      }
      case TimestepSpacing::leading: {
        const std::int64_t ratio = last_timestep / (n + 1);
        for (std::int64_t i = n; i >= 1; --i) ts.push_back(static_cast<double>(i * ratio + steps_offset_));
        break;
      }
      case TimestepSpacing::trailing:
        for (double v :
             np_arange(static_cast<double>(last_timestep), 0, -static_cast<double>(N) / static_cast<double>(n)))
          ts.push_back(np_round(v) - 1);
        break;
    }
    const auto train_sigmas = training_sigmas(alphas_cumprod_);  // [N] float32, ascending
    const auto train = to_doubles(train_sigmas);
    const auto log_sigmas = log_sigmas_f32(train_sigmas);
    std::vector<double> sig;
    if (karras_ || lu_lambdas_) {
      if (karras_) {
        sig = karras_sigmas(sigma_min_.value_or(train.front()), sigma_max_.value_or(train.back()), n);
      } else {
        // Uniform in log sigma between the extreme training values (rho 1).
        const double lmin = log_sigmas.front(), lmax = log_sigmas.back();
        for (double r : np_linspace(0.0, 1.0, n)) sig.push_back(std::exp(std::pow(lmax + r * (lmin - lmax), 1.0)));
      }
      ts.clear();
      for (double s : sig) ts.push_back(np_round(sigma_to_t(s, log_sigmas)));
    } else {
      sig = np_interp(ts, train);
    }
    sig.push_back(final_sigma_min_ ? train.front() : 0.0);
    for (double t : ts)
      if (t < 0 || t >= static_cast<double>(N))
        throw InputError(
            fmt::format("DPMSolverMultistepScheduler: timestep {} outside 0..{} (steps_offset {} with {} steps)", t,
                        N - 1, steps_offset_, n));
    sigmas_ = torch::tensor(sig, torch::kFloat64).to(torch::kFloat32);
    timesteps_ = ts;
    num_inference_steps_ = static_cast<std::int64_t>(ts.size());
    model_outputs_.assign(static_cast<std::size_t>(solver_order_), torch::Tensor());
    lower_order_nums_ = 0;
    step_index_.reset();
  }

  torch::Tensor step(const torch::Tensor& model_output_in, double t, const torch::Tensor& sample_in,
                     at::Generator*) override {
    if (num_inference_steps_ == 0) throw RuntimeError("DPMSolverMultistepScheduler: step() before set_timesteps()");
    if (!step_index_) step_index_ = index_for_timestep(t);
    const auto i = *step_index_;
    const auto n = static_cast<std::int64_t>(timesteps_.size());
    if (i + 1 >= sigmas_.size(0))
      throw RuntimeError(
          fmt::format("DPMSolverMultistepScheduler: step {} past the end of the schedule ({} steps)", i, n));
    // Lower orders at the end for numerical stability with few steps.
    const bool lower_order_final =
        i == n - 1 && (euler_at_final_ || (lower_order_final_ && n < 15) || !final_sigma_min_);
    const bool lower_order_second = i == n - 2 && lower_order_final_ && n < 15;

    auto model_output = convert_model_output(model_output_in, sample_in, i);
    for (std::size_t k = 0; k + 1 < model_outputs_.size(); ++k) model_outputs_[k] = model_outputs_[k + 1];
    model_outputs_.back() = model_output;
    auto sample = sample_in.to(torch::kFloat32);
    torch::Tensor prev;
    if (solver_order_ == 1 || lower_order_nums_ < 1 || lower_order_final)
      prev = first_order_update(model_output, sample, i);
    else if (solver_order_ == 2 || lower_order_nums_ < 2 || lower_order_second)
      prev = second_order_update(sample, i);
    else
      prev = third_order_update(sample, i);
    if (lower_order_nums_ < solver_order_) ++lower_order_nums_;
    *step_index_ += 1;
    return prev.to(model_output.scalar_type());
  }

  torch::Tensor add_noise(const torch::Tensor& original, const torch::Tensor& noise, double t) const override {
    if (num_inference_steps_ == 0)
      throw RuntimeError("DPMSolverMultistepScheduler: add_noise() before set_timesteps()");
    auto sigma = sigmas_[index_for_timestep(t)].to(original.scalar_type());
    auto [alpha_t, sigma_t] = alpha_sigma(sigma);
    return alpha_t.to(original.device()) * original + sigma_t.to(original.device()) * noise;
  }

 private:
  // _sigma_to_alpha_sigma_t: the VP coefficients of a sigma (0-dim float32).
  static std::pair<torch::Tensor, torch::Tensor> alpha_sigma(const torch::Tensor& sigma) {
    auto alpha_t = 1 / (sigma.pow(2) + 1).pow(0.5);
    return {alpha_t, sigma * alpha_t};
  }
  static torch::Tensor lambda_of(const torch::Tensor& alpha, const torch::Tensor& sigma) {
    return torch::log(alpha) - torch::log(sigma);
  }

  // The second match when t repeats; the last step when t is not in the schedule (as the reference).
  std::int64_t index_for_timestep(double t) const {
    std::vector<std::int64_t> hits;
    for (std::size_t k = 0; k < timesteps_.size(); ++k)
      if (timesteps_[k] == t) hits.push_back(static_cast<std::int64_t>(k));
    if (hits.empty()) return static_cast<std::int64_t>(timesteps_.size()) - 1;
    return hits[hits.size() > 1 ? 1 : 0];
  }

  // The data prediction x0 the solver integrates.
  torch::Tensor convert_model_output(const torch::Tensor& model_output, const torch::Tensor& sample,
                                     std::int64_t i) const {
    torch::Tensor x0_pred;
    auto [alpha_t, sigma_t] = alpha_sigma(sigmas_[i]);
    switch (prediction_) {
      case PredictionType::epsilon:
        x0_pred = (sample - sigma_t * model_output) / alpha_t;
        break;
      case PredictionType::sample:
        x0_pred = model_output;
        break;
      case PredictionType::v_prediction:
        x0_pred = alpha_t * sample - sigma_t * model_output;
        break;
    }
    if (thresholding_) x0_pred = threshold_sample(x0_pred, dynamic_thresholding_ratio_, sample_max_value_);
    return x0_pred;
  }

  torch::Tensor first_order_update(const torch::Tensor& model_output, const torch::Tensor& sample,
                                   std::int64_t i) const {
    auto [alpha_t, sigma_t] = alpha_sigma(sigmas_[i + 1]);
    auto [alpha_s, sigma_s] = alpha_sigma(sigmas_[i]);
    auto h = lambda_of(alpha_t, sigma_t) - lambda_of(alpha_s, sigma_s);
    return (sigma_t / sigma_s) * sample - (alpha_t * (torch::exp(-h) - 1.0)) * model_output;
  }

  torch::Tensor second_order_update(const torch::Tensor& sample, std::int64_t i) const {
    auto [alpha_t, sigma_t] = alpha_sigma(sigmas_[i + 1]);
    auto [alpha_s0, sigma_s0] = alpha_sigma(sigmas_[i]);
    auto [alpha_s1, sigma_s1] = alpha_sigma(sigmas_[i - 1]);
    auto lambda_t = lambda_of(alpha_t, sigma_t), lambda_s0 = lambda_of(alpha_s0, sigma_s0);
    auto lambda_s1 = lambda_of(alpha_s1, sigma_s1);
    const auto& m0 = model_outputs_[model_outputs_.size() - 1];
    const auto& m1 = model_outputs_[model_outputs_.size() - 2];
    auto h = lambda_t - lambda_s0, h_0 = lambda_s0 - lambda_s1;
    auto r0 = h_0 / h;
    const auto& D0 = m0;
    auto D1 = (1.0 / r0) * (m0 - m1);
    if (!heun_)
      return (sigma_t / sigma_s0) * sample - (alpha_t * (torch::exp(-h) - 1.0)) * D0 -
             0.5 * (alpha_t * (torch::exp(-h) - 1.0)) * D1;
    return (sigma_t / sigma_s0) * sample - (alpha_t * (torch::exp(-h) - 1.0)) * D0 +
           (alpha_t * ((torch::exp(-h) - 1.0) / h + 1.0)) * D1;
  }

  torch::Tensor third_order_update(const torch::Tensor& sample, std::int64_t i) const {
    auto [alpha_t, sigma_t] = alpha_sigma(sigmas_[i + 1]);
    auto [alpha_s0, sigma_s0] = alpha_sigma(sigmas_[i]);
    auto [alpha_s1, sigma_s1] = alpha_sigma(sigmas_[i - 1]);
    auto [alpha_s2, sigma_s2] = alpha_sigma(sigmas_[i - 2]);
    auto lambda_t = lambda_of(alpha_t, sigma_t), lambda_s0 = lambda_of(alpha_s0, sigma_s0);
    auto lambda_s1 = lambda_of(alpha_s1, sigma_s1), lambda_s2 = lambda_of(alpha_s2, sigma_s2);
    const auto k = model_outputs_.size();
    const auto &m0 = model_outputs_[k - 1], &m1 = model_outputs_[k - 2], &m2 = model_outputs_[k - 3];
    auto h = lambda_t - lambda_s0, h_0 = lambda_s0 - lambda_s1, h_1 = lambda_s1 - lambda_s2;
    auto r0 = h_0 / h, r1 = h_1 / h;
    const auto& D0 = m0;
    auto D1_0 = (1.0 / r0) * (m0 - m1), D1_1 = (1.0 / r1) * (m1 - m2);
    auto D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1);
    auto D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1);
    return (sigma_t / sigma_s0) * sample - (alpha_t * (torch::exp(-h) - 1.0)) * D0 +
           (alpha_t * ((torch::exp(-h) - 1.0) / h + 1.0)) * D1 -
           (alpha_t * ((torch::exp(-h) - 1.0 + h) / h.pow(2) - 0.5)) * D2;
  }

  BetaConfig betas_cfg_;
  std::int64_t solver_order_ = 2;
  PredictionType prediction_ = PredictionType::epsilon;
  bool thresholding_ = false;
  double dynamic_thresholding_ratio_ = 0.995, sample_max_value_ = 1.0;
  bool heun_ = false, lower_order_final_ = true, euler_at_final_ = false, karras_ = false, lu_lambdas_ = false;
  bool final_sigma_min_ = false;
  double lambda_min_clipped_ = -INFINITY;
  std::optional<double> sigma_min_, sigma_max_;
  TimestepSpacing spacing_ = TimestepSpacing::linspace;
  std::int64_t steps_offset_ = 0;
  torch::Tensor lambda_t_;  // [N] float32

  // Run state.
  std::vector<torch::Tensor> model_outputs_;  // the last solver_order x0 predictions (undefined = None)
  std::int64_t lower_order_nums_ = 0;
  std::optional<std::int64_t> step_index_;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpm_solver(const SchedulerConfig& cfg, const SchedulerOptions& opts) {
  return std::make_unique<DPMSolverMultistepScheduler>(cfg, opts);
}

}  // namespace lli::schedulers::detail
