// Ref: diffusers 0.31 configuration_utils.py (extract_init_dict), scheduling_ddpm.py,
//      scheduling_ddim.py, scheduling_euler_discrete.py; numpy 1.24 function_base.py (linspace),
//      ctors.c / arraytypes (arange fill), compiled_base.c (interp).
#include "schedulers/scheduler.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "io/bounded_parse.h"
#include "lli/error.h"
#include "lli/log.h"
#include "schedulers/schedule_util.h"

namespace lli::schedulers {

namespace {
struct KindNames {
  SchedulerKind kind;
  const char* cli;
  const char* cls;
};
constexpr KindNames kKinds[] = {
    {SchedulerKind::pndm, "pndm", "PNDMScheduler"},
    {SchedulerKind::ddim, "ddim", "DDIMScheduler"},
    {SchedulerKind::euler, "euler", "EulerDiscreteScheduler"},
    {SchedulerKind::euler_ancestral, "euler-a", "EulerAncestralDiscreteScheduler"},
    {SchedulerKind::dpmpp_2m, "dpm++2m", "DPMSolverMultistepScheduler"},
};
const KindNames& names_of(SchedulerKind k) {
  for (const auto& n : kKinds)
    if (n.kind == k) return n;
  throw RuntimeError("scheduler: unknown kind");
}
std::string supported_classes() {
  std::string s;
  for (const auto& n : kKinds) s += (s.empty() ? "" : ", ") + std::string(n.cls);
  return s;
}
}  // namespace

std::optional<SchedulerKind> parse_scheduler_name(const std::string& name) {
  if (name == "auto") return std::nullopt;
  for (const auto& n : kKinds)
    if (name == n.cli) return n.kind;
  throw UsageError(
      fmt::format("--scheduler: unknown scheduler '{}' (expected auto, pndm, ddim, euler, euler-a, dpm++2m)", name));
}

std::string scheduler_cli_name(SchedulerKind kind) { return names_of(kind).cli; }
std::string scheduler_class_name(SchedulerKind kind) { return names_of(kind).cls; }

std::optional<SchedulerKind> scheduler_kind_of_class(const std::string& class_name) {
  for (const auto& n : kKinds)
    if (class_name == n.cls) return n.kind;
  return std::nullopt;
}

SchedulerConfig scheduler_config_from_json(nlohmann::json j, const std::string& source) {
  if (!j.is_object()) throw ModelError(source + ": expected a JSON object at the top level");
  SchedulerConfig c;
  c.file = source;
  auto it = j.find("_class_name");
  if (it != j.end() && !it->is_null()) {
    if (!it->is_string()) throw ModelError(source + ": _class_name: expected a string, got " + it->dump());
    c.class_name = it->get<std::string>();
  }
  c.json = std::move(j);
  return c;
}

namespace {
// Python's json module writes the non-standard constants Infinity, -Infinity and NaN (diffusers
// saves lambda_min_clipped = -inf that way): they become the strings "Infinity", "-Infinity", "NaN"
// so that the text parses; the typed reads know them.
std::string python_json_constants(const std::string& text) {
  std::string out;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      out += ch;
      if (ch == '\\' && i + 1 < text.size())
        out += text[++i];
      else if (ch == '"')
        in_string = false;
      continue;
    }
    if (ch == '"') in_string = true;
    bool replaced = false;
    for (const char* word : {"-Infinity", "Infinity", "NaN"}) {
      const std::size_t n = std::char_traits<char>::length(word);
      if (text.compare(i, n, word) == 0) {
        out += '"' + std::string(word) + '"';
        i += n - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += ch;
  }
  return out;
}
}  // namespace

SchedulerConfig load_scheduler_config(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ModelError(file.string() + ": cannot open (missing file?)");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = parse_json_bounded(ss.str(), file.string(), ExitCode::model, "not valid JSON: ");
  } catch (const ModelError&) {
    j = parse_json_bounded(python_json_constants(ss.str()), file.string(), ExitCode::model, "not valid JSON: ");
  }
  return scheduler_config_from_json(std::move(j), file.string());
}

std::unique_ptr<Scheduler> make_scheduler(const SchedulerConfig& cfg, std::optional<SchedulerKind> kind,
                                          const SchedulerOptions& opts) {
  if (!(opts.eta >= 0.0) || !std::isfinite(opts.eta))
    throw UsageError(fmt::format("--eta: must be a finite number >= 0, got {}", opts.eta));
  const std::string src = cfg.file.string();
  if (!kind) {
    if (cfg.class_name.empty())
      throw ModelError(
          src + ": _class_name: missing; choose a scheduler with --scheduler (pndm, ddim, euler, euler-a, dpm++2m)");
    kind = scheduler_kind_of_class(cfg.class_name);
    if (!kind)
      throw ModelError(
          fmt::format("{}: _class_name: '{}' is not supported (supported: {}); choose one with --scheduler", src,
                      cfg.class_name, supported_classes()));
  }
  const std::string cls = scheduler_class_name(*kind);
  if (opts.karras.value_or(false) && *kind != SchedulerKind::euler && *kind != SchedulerKind::dpmpp_2m)
    throw UsageError("--karras: " + cls + " has no Karras sigmas (they exist for euler and dpm++2m)");
  if (opts.eta != 0.0 && *kind != SchedulerKind::ddim)
    log_info("--eta {} applies to DDIM only; {} ignores it (as the diffusers pipelines do)", opts.eta, cls);
  switch (*kind) {
    case SchedulerKind::pndm:
      return detail::make_pndm(cfg, opts);
    case SchedulerKind::ddim:
      return detail::make_ddim(cfg, opts);
    case SchedulerKind::euler:
      return detail::make_euler(cfg, opts);
    case SchedulerKind::euler_ancestral:
      return detail::make_euler_ancestral(cfg, opts);
    case SchedulerKind::dpmpp_2m:
      return detail::make_dpm_solver(cfg, opts);
  }
  throw RuntimeError("scheduler: unknown kind");
}

namespace detail {

// ---------------------------------------------------------------------------------------------
// ClassConfig: extract_init_dict. Keys starting with '_' (the class name, the saving version) and
// keys listed in `_use_default_values` (defaults of the class that saved the file) are not read.
namespace {
std::shared_ptr<const nlohmann::json> visible_keys(const nlohmann::json& j) {
  std::set<std::string> defaults;
  auto it = j.find("_use_default_values");
  if (it != j.end() && it->is_array())
    for (const auto& k : *it)
      if (k.is_string()) defaults.insert(k.get<std::string>());
  auto out = std::make_shared<nlohmann::json>(nlohmann::json::object());
  for (auto e = j.begin(); e != j.end(); ++e)
    if (!e.key().empty() && e.key()[0] != '_' && !defaults.count(e.key())) (*out)[e.key()] = e.value();
  return out;
}
}  // namespace

ClassConfig::ClassConfig(const SchedulerConfig& cfg, std::string class_name)
    : class_name_(std::move(class_name)), visible_(visible_keys(cfg.json)), reader_(*visible_, cfg.file.string()) {}

void ClassConfig::record(const std::string& key, nlohmann::json value) {
  effective_[key] = std::move(value);
  read_.push_back(key);
}

std::int64_t ClassConfig::get_int(const std::string& key, std::int64_t def) {
  auto v = reader_.get_int(key, def);
  record(key, v);
  return v;
}

double ClassConfig::get_double(const std::string& key, double def, bool allow_infinite) {
  double v = def;
  const auto* j = reader_.has(key) ? &reader_.at(key) : nullptr;
  if (j && j->is_string() && (*j == "Infinity" || *j == "-Infinity"))  // see python_json_constants()
    v = *j == "Infinity" ? INFINITY : -INFINITY;
  else
    v = reader_.get_double(key, def);
  if (std::isnan(v) || (!allow_infinite && !std::isfinite(v))) refuse(key, "must be finite");
  record(key, std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(v > 0 ? "Infinity" : "-Infinity"));
  return v;
}

bool ClassConfig::get_bool(const std::string& key, bool def) {
  auto v = reader_.get_bool(key, def);
  record(key, v);
  return v;
}

std::string ClassConfig::get_choice(const std::string& key, const std::string& def,
                                    std::initializer_list<const char*> allowed) {
  auto v = reader_.get_string(key, def);
  for (const char* a : allowed)
    if (v == a) {
      record(key, v);
      return v;
    }
  std::string list;
  for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  throw ModelError(
      fmt::format("{}: '{}' is not supported by {} (expected one of: {})", where(key), v, class_name_, list));
}

std::optional<double> ClassConfig::get_optional_double(const std::string& key) {
  if (!reader_.has(key)) {
    record(key, nullptr);
    return std::nullopt;
  }
  return get_double(key, 0.0);
}

std::optional<std::vector<double>> ClassConfig::get_optional_doubles(const std::string& key) {
  if (!reader_.has(key)) {
    record(key, nullptr);
    return std::nullopt;
  }
  const auto& v = reader_.at(key);
  std::vector<double> out;
  if (v.is_array())
    for (const auto& x : v) {
      if (!x.is_number()) break;
      out.push_back(x.get<double>());
    }
  if (!v.is_array() || out.size() != v.size() || out.empty())
    throw ModelError(where(key) + ": expected a non-empty array of numbers, got " + v.dump().substr(0, 80));
  record(key, v);
  return out;
}

void ClassConfig::refuse(const std::string& key, const std::string& why) const {
  std::string value = reader_.has(key) ? reader_.at(key).dump() : "<default>";
  throw ModelError(fmt::format("{} = {}: {} ({})", where(key), value, why, class_name_));
}

nlohmann::json ClassConfig::effective() const {
  nlohmann::json j = nlohmann::json::object();
  j["_class_name"] = class_name_;
  for (const auto& k : read_) j[k] = effective_.at(k);
  return j;
}

void ClassConfig::log_ignored_keys() const {
  std::string ignored;
  for (auto e = visible_->begin(); e != visible_->end(); ++e)
    if (std::find(read_.begin(), read_.end(), e.key()) == read_.end())
      ignored += (ignored.empty() ? "" : ", ") + e.key();
  if (!ignored.empty()) log_debug("{}: keys not used by {}: {}", reader_.source(), class_name_, ignored);
}

// ---------------------------------------------------------------------------------------------
// Betas.
BetaConfig read_beta_config(ClassConfig& c, bool has_rescale_key) {
  BetaConfig b;
  b.num_train_timesteps = c.get_int("num_train_timesteps", 1000);
  if (b.num_train_timesteps < 2) c.refuse("num_train_timesteps", "must be at least 2");
  b.beta_start = c.get_double("beta_start", 0.0001);
  b.beta_end = c.get_double("beta_end", 0.02);
  b.trained_betas = c.get_optional_doubles("trained_betas");
  if (b.trained_betas) {
    // The class takes trained_betas first and never looks at beta_schedule.
    if (static_cast<std::int64_t>(b.trained_betas->size()) != b.num_train_timesteps)
      c.refuse("trained_betas",
               fmt::format("has {} values, num_train_timesteps is {}", b.trained_betas->size(), b.num_train_timesteps));
    for (double x : *b.trained_betas)
      if (!(x >= 0.0 && x < 1.0)) c.refuse("trained_betas", fmt::format("every beta must be in [0, 1), got {}", x));
  } else {
    const auto s = c.get_choice("beta_schedule", "linear", {"linear", "scaled_linear", "squaredcos_cap_v2"});
    b.beta_schedule = s == "linear"          ? BetaSchedule::linear
                      : s == "scaled_linear" ? BetaSchedule::scaled_linear
                                             : BetaSchedule::squaredcos_cap_v2;
    if (b.beta_schedule != BetaSchedule::squaredcos_cap_v2) {
      if (!(b.beta_start >= 0.0 && b.beta_end < 1.0 && b.beta_end >= 0.0))
        c.refuse("beta_end",
                 fmt::format("beta_start and beta_end must be in [0, 1), got {} and {}", b.beta_start, b.beta_end));
    }
  }
  if (has_rescale_key) b.rescale_betas_zero_snr = c.get_bool("rescale_betas_zero_snr", false);
  return b;
}

namespace {
// betas_for_alpha_bar (cosine): Python floats, then torch.tensor(float32).
torch::Tensor cosine_betas(std::int64_t n) {
  const auto alpha_bar = [](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * M_PI / 2);
    return std::pow(c, 2.0);
  };
  std::vector<double> betas;
  for (std::int64_t i = 0; i < n; ++i) {
    const double t1 = static_cast<double>(i) / static_cast<double>(n);
    const double t2 = static_cast<double>(i + 1) / static_cast<double>(n);
    betas.push_back(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return torch::tensor(betas, torch::kFloat64).to(torch::kFloat32);
}

// rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1), float32 torch ops in the same order.
torch::Tensor rescale_zero_terminal_snr(const torch::Tensor& betas) {
  auto alphas = 1.0 - betas;
  auto alphas_bar_sqrt = torch::cumprod(alphas, 0).sqrt();
  auto a0 = alphas_bar_sqrt[0].clone();
  auto aT = alphas_bar_sqrt[-1].clone();
  alphas_bar_sqrt -= aT;
  alphas_bar_sqrt *= a0 / (a0 - aT);
  auto alphas_bar = alphas_bar_sqrt.pow(2);
  auto n = alphas_bar.size(0);
  auto ratios = alphas_bar.slice(0, 1, n) / alphas_bar.slice(0, 0, n - 1);
  alphas = torch::cat({alphas_bar.slice(0, 0, 1), ratios});
  return 1 - alphas;
}
}  // namespace

torch::Tensor make_betas(const BetaConfig& b) {
  torch::Tensor betas;
  if (b.trained_betas) {
    betas = torch::tensor(*b.trained_betas, torch::kFloat64).to(torch::kFloat32);
  } else {
    switch (b.beta_schedule) {
      case BetaSchedule::linear:
        betas = torch::linspace(b.beta_start, b.beta_end, b.num_train_timesteps, torch::kFloat32);
        break;
      case BetaSchedule::scaled_linear:
        betas = torch::linspace(std::pow(b.beta_start, 0.5), std::pow(b.beta_end, 0.5), b.num_train_timesteps,
                                torch::kFloat32)
                    .pow(2);
        break;
      case BetaSchedule::squaredcos_cap_v2:
        betas = cosine_betas(b.num_train_timesteps);
        break;
    }
  }
  if (b.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  return betas;
}

torch::Tensor alphas_cumprod_of(const torch::Tensor& betas) { return torch::cumprod(1.0 - betas, 0); }

PredictionType read_prediction_type(ClassConfig& c, std::initializer_list<const char*> allowed) {
  const auto p = c.get_choice("prediction_type", "epsilon", allowed);
  if (p == "epsilon") return PredictionType::epsilon;
  if (p == "v_prediction") return PredictionType::v_prediction;
  return PredictionType::sample;  // "sample" (Euler also "original_sample")
}

TimestepSpacing read_timestep_spacing(ClassConfig& c, const char* def) {
  const auto s = c.get_choice("timestep_spacing", def, {"leading", "linspace", "trailing"});
  return s == "leading"    ? TimestepSpacing::leading
         : s == "linspace" ? TimestepSpacing::linspace
                           : TimestepSpacing::trailing;
}

void check_num_steps(std::int64_t n, std::int64_t num_train_timesteps, const std::string& class_name) {
  if (n < 1 || n > num_train_timesteps)
    throw InputError(fmt::format("{}: the number of inference steps must be in 1..{} (num_train_timesteps), got {}",
                                 class_name, num_train_timesteps, n));
}

torch::Tensor threshold_sample(const torch::Tensor& x, double ratio, double sample_max_value) {
  // x: [B, C, ...] -> [B, C * ...]
  const auto dtype = x.scalar_type();
  auto s = (dtype == torch::kFloat32 || dtype == torch::kFloat64) ? x : x.to(torch::kFloat32);
  auto flat = s.reshape({x.size(0), -1});
  auto q = torch::quantile(flat.abs(), ratio, /*dim=*/1);
  q = torch::clamp(q, 1, sample_max_value).unsqueeze(1);  // [B, 1]
  flat = torch::clamp(flat, -q, q) / q;
  return flat.reshape(x.sizes()).to(dtype);
}

torch::Tensor add_noise_vp(const torch::Tensor& alphas_cumprod, const torch::Tensor& original,
                           const torch::Tensor& noise, std::int64_t t) {
  if (t < 0 || t >= alphas_cumprod.size(0))
    throw RuntimeError(fmt::format("scheduler add_noise: timestep {} outside 0..{}", t, alphas_cumprod.size(0) - 1));
  auto idx = torch::tensor({t}, torch::kInt64);
  auto ac = alphas_cumprod.to(original.scalar_type()).index_select(0, idx);  // [1]
  auto sqrt_alpha_prod = ac.pow(0.5);
  auto sqrt_one_minus = (1 - ac).pow(0.5);
  while (sqrt_alpha_prod.dim() < original.dim()) sqrt_alpha_prod = sqrt_alpha_prod.unsqueeze(-1);
  while (sqrt_one_minus.dim() < original.dim()) sqrt_one_minus = sqrt_one_minus.unsqueeze(-1);
  return sqrt_alpha_prod.to(original.device()) * original + sqrt_one_minus.to(original.device()) * noise;
}

std::int64_t integral_timestep(double t, const std::string& what) {
  if (!std::isfinite(t) || t != std::floor(t) || std::fabs(t) > 1e15)
    throw RuntimeError(fmt::format("{}: timestep {} is not an integer", what, t));
  return static_cast<std::int64_t>(t);
}

torch::Tensor randn_like_from(const torch::Tensor& like, at::Generator* gen) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  auto r = gen ? torch::randn(like.sizes(), *gen, opts) : torch::randn(like.sizes(), opts);
  return r.to(like.device(), like.scalar_type());
}

// ---------------------------------------------------------------------------------------------
// numpy.
std::vector<double> np_linspace(double start, double stop, std::int64_t num) {
  std::vector<double> y(static_cast<std::size_t>(std::max<std::int64_t>(num, 0)));
  const std::int64_t div = num - 1;
  const double delta = stop - start;
  if (div > 0) {
    const double step = delta / static_cast<double>(div);
    for (std::int64_t i = 0; i < num; ++i) {
      const double yi =
          step == 0 ? static_cast<double>(i) / static_cast<double>(div) * delta : static_cast<double>(i) * step;
      y[static_cast<std::size_t>(i)] = yi + start;
    }
    y.back() = stop;
  } else {
    for (std::int64_t i = 0; i < num; ++i) y[static_cast<std::size_t>(i)] = static_cast<double>(i) * delta + start;
  }
  return y;
}

std::vector<double> np_arange(double start, double stop, double step) {
  const double len_f = std::ceil((stop - start) / step);
  if (!(len_f > 0)) return {};
  const auto n = static_cast<std::size_t>(len_f);
  std::vector<double> y(n);
  y[0] = start;
  if (n > 1) y[1] = start + step;
  const double delta = n > 1 ? y[1] - y[0] : 0.0;
  for (std::size_t i = 2; i < n; ++i) y[i] = start + static_cast<double>(i) * delta;
  return y;
}

std::vector<double> np_interp(const std::vector<double>& x, const std::vector<double>& fp) {
  const auto n = static_cast<std::int64_t>(fp.size());
  std::vector<double> out;
  out.reserve(x.size());
  for (double xv : x) {
    if (std::isnan(xv)) {
      out.push_back(xv);
    } else if (xv < 0) {
      out.push_back(fp.front());
    } else if (xv > static_cast<double>(n - 1)) {
      out.push_back(fp.back());
    } else {
      const auto j = std::min<std::int64_t>(static_cast<std::int64_t>(std::floor(xv)), n - 1);
      const auto ju = static_cast<std::size_t>(j);
      if (j == n - 1 || static_cast<double>(j) == xv) {
        out.push_back(fp[ju]);
      } else {
        const double slope = (fp[ju + 1] - fp[ju]) / 1.0;
        double r = slope * (xv - static_cast<double>(j)) + fp[ju];
        if (std::isnan(r)) {
          r = slope * (xv - static_cast<double>(j + 1)) + fp[ju + 1];
          if (std::isnan(r) && fp[ju] == fp[ju + 1]) r = fp[ju];
        }
        out.push_back(r);
      }
    }
  }
  return out;
}

double np_round(double x) { return std::nearbyint(x); }

std::vector<double> to_doubles(const torch::Tensor& t) {
  auto d = t.to(torch::kCPU, torch::kFloat64).contiguous().reshape({-1});
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

torch::Tensor training_sigmas(const torch::Tensor& alphas_cumprod) {
  return ((1 - alphas_cumprod) / alphas_cumprod).pow(0.5);
}

std::vector<float> log_sigmas_f32(const torch::Tensor& sigmas) {
  std::vector<float> out;
  for (double s : to_doubles(sigmas)) out.push_back(static_cast<float>(std::log(s)));
  return out;
}

// numpy 1.24 (value-based casting): the float64 log sigma meets the float32 table as float32, the
// weight is float32, the final blend float64.
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  const auto ls32 = static_cast<float>(log_sigma);
  const auto n = static_cast<std::int64_t>(log_sigmas.size());
  std::int64_t count = 0, last = 0;
  for (std::int64_t i = 0; i < n; ++i)
    if (ls32 - log_sigmas[static_cast<std::size_t>(i)] >= 0.0f) {
      ++count;
      last = i;
    }
  std::int64_t low_idx = count > 0 ? last : 0;  // argmax of the cumulative count
  low_idx = std::min(low_idx, n - 2);
  const std::int64_t high_idx = low_idx + 1;
  const float low = log_sigmas[static_cast<std::size_t>(low_idx)];
  const float high = log_sigmas[static_cast<std::size_t>(high_idx)];
  float w = (low - ls32) / (low - high);
  w = std::min(std::max(w, 0.0f), 1.0f);
  return static_cast<double>(1.0f - w) * static_cast<double>(low_idx) +
         static_cast<double>(w) * static_cast<double>(high_idx);
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, std::int64_t n) {
  const double rho = 7.0;
  const auto ramp = np_linspace(0.0, 1.0, n);
  const double min_inv_rho = std::pow(sigma_min, 1 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1 / rho);
  std::vector<double> out;
  for (double r : ramp) out.push_back(std::pow(max_inv_rho + r * (min_inv_rho - max_inv_rho), rho));
  return out;
}

}  // namespace detail
}  // namespace lli::schedulers
