// Ref: LLaVA llava/serve/cli.py (conversation loop, image kept across turns, history reset on a new
// image) and transformers 4.45 generation/utils.py (prefill, then one token per step with the KV
// cache; stop on EOS). Orchestration only: model math in models/llava, text in text/.
#include "pipelines/chat.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"
#include "io/dtype_convert.h"
#include "lli/device.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "models/llava.h"
#include "nn/quant_linear.h"
#include "models/llava_preprocess.h"
#include "sampling/sampler.h"
#include "text/llama_tokenizer.h"

namespace lli::pipelines {

namespace fs = std::filesystem;
namespace m = lli::models;

ChatImageAspect parse_chat_image_aspect(const std::string& s) {
  if (s == "crop" || s == "resize_crop") return ChatImageAspect::crop;
  if (s == "pad" || s == "pad_square") return ChatImageAspect::pad;
  throw UsageError("--image-aspect '" + s + "': expected crop (llava-hf processor) or pad (original LLaVA-1.5)");
}

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::eos: return "eos";
    case FinishReason::stop_string: return "stop_string";
    case FinishReason::length: return "length";
  }
  return "?";
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string strip(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Streams text with its surrounding whitespace removed: leading whitespace is dropped, a run of
// whitespace is held back until something follows it, and whatever is held at the end is dropped.
class StripStream {
 public:
  explicit StripStream(const std::function<void(const std::string&)>& sink) : sink_(sink) {}
  void push(const std::string& chunk) {
    std::string out;
    for (char c : chunk) {
      if (is_space(c)) {
        if (started_) held_ += c;
        continue;
      }
      started_ = true;
      out += held_;
      held_.clear();
      out += c;
    }
    if (!out.empty()) {
      text_ += out;
      if (sink_) sink_(out);
    }
  }
  const std::string& text() const { return text_; }

 private:
  const std::function<void(const std::string&)>& sink_;
  bool started_ = false;
  std::string held_, text_;
};

torch::Device to_torch_device(const DeviceChoice& d) {
  return d.cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(d.index)) : torch::Device(torch::kCPU);
}

torch::Dtype to_torch_dtype(DTypeChoice d) {
  switch (d) {
    case DTypeChoice::bf16: return torch::kBFloat16;
    case DTypeChoice::f16: return torch::kHalf;
    default: return torch::kFloat32;
  }
}

torch::Tensor ids_tensor(const std::vector<std::int64_t>& ids, std::size_t from) {
  std::vector<std::int64_t> part(ids.begin() + static_cast<std::ptrdiff_t>(from), ids.end());
  return torch::tensor(part, torch::kInt64).view({1, -1});  // [1, L]
}

// The model's identity for prompt caches: config.json, compute dtype, every parameter's name,
// shape and first bytes.
std::string model_fingerprint(const fs::path& dir, const m::LlavaImpl& model, const std::string& dtype) {
  std::string fp = read_file((dir / "config.json").string()) + "\n" + dtype + "\n";
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    const auto& t = p.value();
    fp += p.key() + c10::str(t.sizes());
    if (t.is_cpu() && t.is_contiguous() && t.numel() > 0) {
      const auto n = std::min<std::size_t>(32, static_cast<std::size_t>(t.numel()) * t.element_size());
      fp.append(static_cast<const char*>(t.data_ptr()), n);
    }
    fp += "\n";
  }
  return sha256_hex(fp);
}

}  // namespace

struct ChatSession::Impl {
  fs::path dir;
  DTypeChoice dtype_choice = DTypeChoice::f32;
  DeviceChoice device_choice;
  st::Residency weights = st::Residency::mmap;
  m::Llava model{nullptr};
  std::optional<text::LlamaTokenizer> tok;
  text::ImageTokenConfig image_tokens;
  m::ImageProcessorConfig processor;
  m::ImageAspect aspect = m::ImageAspect::resize_crop;
  text::ChatTemplate tmpl;
  std::vector<std::int64_t> eos_ids;
  double load_ms = 0;

  // Run state.
  m::KVCache cache;
  std::vector<std::int64_t> cached_ids;  // what the cache holds keys/values for (cache.n_past of them)
  cv::Mat image;                         // BGR; empty = no image
  torch::Tensor features;                // [1, N, Dt]; undefined until needed
  std::vector<ChatExchange> history;

  std::vector<text::ChatTurn> turns(const std::string& question) const {
    std::vector<text::ChatTurn> out;
    for (const auto& h : history) out.push_back({h.question, h.answer, false});
    out.push_back({question, std::nullopt, false});
    out.front().image = !image.empty();
    return out;
  }

  std::vector<std::int64_t> encode(const std::string& question) const {
    return text::encode_llava_prompt(*tok, image_tokens, tmpl.render(turns(question)));
  }

  // Grows the cache (copying what it holds) so that it can take `need` positions.
  void ensure_capacity(std::int64_t need) {
    if (cache.capacity() >= need) return;
    const std::int64_t ctx = model->cfg.text.max_position_embeddings;
    const std::int64_t cap = std::min(ctx, std::max(need, (need + 255) / 256 * 256));
    m::KVCache grown = model->make_cache(cap);
    const std::int64_t keep = cache.capacity() ? cache.n_past : 0;
    for (std::size_t l = 0; l < grown.k.size() && keep > 0; ++l) {
      grown.k[l].narrow(2, 0, keep).copy_(cache.k[l].narrow(2, 0, keep));
      grown.v[l].narrow(2, 0, keep).copy_(cache.v[l].narrow(2, 0, keep));
    }
    grown.n_past = keep;
    cache = std::move(grown);
    log_debug("chat: KV cache capacity {} positions", cap);
  }

  void invalidate_cache() {
    cached_ids.clear();
    cache.clear();
  }

  // Prompt-cache identities, computed when first needed (not at load: reading the first bytes of
  // every parameter touches one page of each): the model and the image (pixels + aspect mode).
  mutable std::string fingerprint;
  const std::string& model_hash() const {
    if (fingerprint.empty())
      fingerprint = model_fingerprint(dir, *model, std::string(dtype_choice_name(dtype_choice)) + " " +
                                                       m::llava_weight_format(*model));
    return fingerprint;
  }
  mutable std::string image_sha;
  const std::string& image_hash() const {
    if (image_sha.empty() && !image.empty()) {
      std::string b = std::to_string(image.rows) + "x" + std::to_string(image.cols) + "/" +
                      std::to_string(static_cast<int>(aspect)) + "/";
      for (int y = 0; y < image.rows; ++y)
        b.append(reinterpret_cast<const char*>(image.ptr(y)), static_cast<std::size_t>(image.cols) * 3);
      image_sha = sha256_hex(b);
    }
    return image_sha;
  }
};

namespace {

constexpr const char* kPromptCacheFormat = "lli-prompt-cache";
constexpr const char* kPromptCacheVersion = "1";

st::DType st_dtype(torch::ScalarType t) {
  if (t != torch::kFloat32 && t != torch::kBFloat16 && t != torch::kHalf)
    throw RuntimeError("prompt cache: unsupported KV dtype " + std::string(c10::toString(t)));
  return to_st_dtype(t);
}

}  // namespace

WeightsChoice parse_weights_choice(const std::string& s) {
  if (s == "auto") return WeightsChoice::automatic;
  if (s == "mmap") return WeightsChoice::mmap;
  if (s == "copy") return WeightsChoice::copy;
  throw UsageError("--weights: expected auto, mmap or copy, got \"" + s + "\"");
}

namespace {

// Bytes the weights occupy once converted to `dtype` (headers only: nothing is read).
std::uint64_t converted_weight_bytes(const st::Checkpoint& ckpt, torch::ScalarType dtype) {
  const auto to = to_st_dtype(dtype);
  std::uint64_t n = 0;
  for (const auto& [name, ref] : ckpt.all())
    n += st::is_floating(ref.dtype) ? ref.nbytes / st::dtype_size(ref.dtype) * st::dtype_size(to) : ref.nbytes;
  return n;
}

// --weights auto: copy when the weights fit into the memory left with a margin for the KV cache,
// activations and the rest of the system (1 GiB + 25 % of the weights). Quantizing at load reads
// the float weights once: they stay mapped (the quantized ones live in huge-page memory anyway).
st::Residency resolve_weights(WeightsChoice w, const fs::path& dir, torch::ScalarType dtype, const DeviceChoice& dev,
                              bool quantize_at_load) {
  if (dev.cuda || w == WeightsChoice::mmap) return st::Residency::mmap;
  if (w == WeightsChoice::copy) return st::Residency::copy;
  const auto ckpt = st::Checkpoint::open(dir);  // headers only
  if (quantize_at_load && !ckpt.metadata().count(nn::kQuantMetadataKey)) {
    log_info("weights: mmap (quantized at load; --weights copy reads them into memory first)");
    return st::Residency::mmap;
  }
  const std::uint64_t need = converted_weight_bytes(ckpt, dtype);
  const std::uint64_t avail = available_memory_bytes();
  const bool fits = avail > 0 && need + need / 4 + (std::uint64_t(1) << 30) <= avail;
  log_info("weights: {} ({:.1f} GB of weights, {:.1f} GB of memory available; --weights mmap|copy chooses)",
           fits ? "copy into huge-page memory" : "mmap", need / 1e9, avail / 1e9);
  return fits ? st::Residency::copy : st::Residency::mmap;
}

}  // namespace

ChatSession::ChatSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChatSession::ChatSession(ChatSession&&) noexcept = default;
ChatSession& ChatSession::operator=(ChatSession&&) noexcept = default;
ChatSession::~ChatSession() = default;

ChatSession ChatSession::load(const fs::path& dir, const ChatOptions& opts) {
  const double t0 = now_ms();
  check_device_available(opts.device);
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->device_choice = opts.device;
  impl->dtype_choice = resolve_dtype(opts.dtype, opts.device);
  if (!fs::is_directory(dir)) throw ModelError(dir.string() + ": not a checkpoint directory");

  m::LlavaLoadOptions lo;
  lo.dtype = to_torch_dtype(impl->dtype_choice);
  lo.device = to_torch_device(opts.device);
  impl->tok = text::LlamaTokenizer::load(dir);  // cheap checks first: a bad directory fails fast
  impl->image_tokens = text::ImageTokenConfig::load(dir);
  impl->processor = m::load_image_processor_config(dir);
  if (!opts.quantize.empty()) {
    nn::quant::QType q;
    if (!nn::quant::parse_qtype(opts.quantize, &q))
      throw UsageError("--quantize: expected q8_0 or q4_k, got \"" + opts.quantize + "\"");
    if (opts.device.cuda) throw UsageError("--quantize: quantized weights run on the CPU only (--device cpu)");
    lo.quantize = q;
  }
  lo.weights = resolve_weights(opts.weights, dir, lo.dtype, opts.device, lo.quantize.has_value());
  impl->weights = lo.weights;
  std::unique_ptr<Progress> bar;
  if (lo.weights == st::Residency::copy)
    lo.progress = [&bar](std::uint64_t done, std::uint64_t total) {
      if (!bar) bar = std::make_unique<Progress>("reading weights (MB)", static_cast<long>(total >> 20));
      bar->update(static_cast<long>(done >> 20));
    };
  impl->model = m::load_llava(dir, lo);
  bar.reset();
  impl->model->eval();

  const auto& cfg = impl->model->cfg;
  if (impl->image_tokens.image_token_id != cfg.image_token_index ||
      impl->image_tokens.image_seq_length != cfg.tokens_per_image())
    throw ModelError(fmt::format("{}: the prompt expands <image> (id {}) to {} tokens but the model makes {} features per "
                                 "image (image_token_index {})",
                                 (dir / "config.json").string(), impl->image_tokens.image_token_id,
                                 impl->image_tokens.image_seq_length, cfg.tokens_per_image(), cfg.image_token_index));
  impl->aspect = opts.image_aspect == ChatImageAspect::pad ? m::ImageAspect::pad_square : m::ImageAspect::resize_crop;
  impl->tmpl.style = opts.style;
  impl->tmpl.system = opts.system;
  impl->tmpl.image_token = impl->image_tokens.image_token;
  impl->eos_ids = cfg.text.eos_token_ids;
  if (std::find(impl->eos_ids.begin(), impl->eos_ids.end(), impl->tok->eos_id()) == impl->eos_ids.end())
    impl->eos_ids.push_back(impl->tok->eos_id());
  impl->load_ms = now_ms() - t0;
  log_debug("chat: loaded {} ({}, {}) in {:.0f} ms", dir.string(), dtype_choice_name(impl->dtype_choice),
            opts.device.str(), impl->load_ms);
  return ChatSession(std::move(impl));
}

void ChatSession::set_image(const cv::Mat& bgr) {
  if (bgr.empty() || bgr.type() != CV_8UC3) throw InputError("chat: the image must be a non-empty 8-bit BGR image");
  impl_->image = bgr.clone();
  impl_->image_sha.clear();
  impl_->features = torch::Tensor();
  impl_->history.clear();
  impl_->invalidate_cache();
}

bool ChatSession::has_image() const { return !impl_->image.empty(); }

void ChatSession::reset() { impl_->history.clear(); }

void ChatSession::set_history(const std::vector<ChatExchange>& history) { impl_->history = history; }

const std::vector<ChatExchange>& ChatSession::history() const { return impl_->history; }

void ChatSession::set_system(const std::string& system) { impl_->tmpl.system = system; }

const std::vector<std::int64_t>& ChatSession::cached_tokens() const { return impl_->cached_ids; }

const std::string& ChatSession::fingerprint() const { return impl_->model_hash(); }

bool ChatSession::save_prompt_cache(const fs::path& file) const {
  const Impl& s = *impl_;
  const std::int64_t n = s.cache.n_past;
  if (n <= 0 || s.cached_ids.size() != static_cast<std::size_t>(n)) return false;
  std::vector<torch::Tensor> keep;  // contiguous CPU copies the writer reads from
  std::vector<st::TensorData> out;
  auto ids = torch::tensor(s.cached_ids, torch::kInt64);  // [n]
  keep.push_back(ids);
  out.push_back({"ids", st::DType::I64, {n}, ids.data_ptr(), static_cast<std::size_t>(n) * 8});
  for (std::size_t l = 0; l < s.cache.k.size(); ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      const auto& c = kv == 0 ? s.cache.k[l] : s.cache.v[l];  // [1, Hkv, cap, D]
      auto t = c.narrow(2, 0, n).to(torch::kCPU).contiguous();
      keep.push_back(t);
      out.push_back({std::string(kv == 0 ? "k." : "v.") + std::to_string(l), st_dtype(t.scalar_type()), t.sizes().vec(),
                     t.data_ptr(), static_cast<std::size_t>(t.numel()) * t.element_size()});
    }
  }
  st::write_file(file, out,
                 {{"format", kPromptCacheFormat},
                  {"version", kPromptCacheVersion},
                  {"model", s.model_hash()},
                  {"image", s.image_hash()}});
  return true;
}

bool ChatSession::load_prompt_cache(const fs::path& file, std::string* why) {
  Impl& s = *impl_;
  auto refuse = [&](const std::string& reason) {
    if (why) *why = file.string() + ": " + reason;
    return false;
  };
  std::optional<st::File> f;
  try {
    f.emplace(st::File::open(file));
  } catch (const Error& e) {
    return refuse(e.what());
  }
  const auto& meta = f->metadata();
  auto get = [&](const char* key) {
    auto it = meta.find(key);
    return it == meta.end() ? std::string() : it->second;
  };
  if (get("format") != kPromptCacheFormat || get("version") != kPromptCacheVersion)
    return refuse("not an lli prompt cache (format " + get("format") + " version " + get("version") + ")");
  if (get("model") != s.model_hash()) return refuse("made by another model or dtype");
  if (get("image") != s.image_hash()) return refuse("made for another image");
  std::map<std::string, st::TensorRef> all;
  for (const auto& t : f->tensors()) all[t.name] = t;
  auto ids_it = all.find("ids");
  if (ids_it == all.end() || ids_it->second.dtype != st::DType::I64 || ids_it->second.shape.size() != 1)
    return refuse("no int64 tensor 'ids'");
  const std::int64_t n = ids_it->second.shape[0];
  if (n <= 0 || n >= context_length()) return refuse("holds " + std::to_string(n) + " tokens");
  const std::size_t layers = static_cast<std::size_t>(s.model->cfg.text.num_hidden_layers);
  if (all.size() != 1 + 2 * layers) return refuse("expected " + std::to_string(1 + 2 * layers) + " tensors");
  m::KVCache probe = s.model->make_cache(1);
  std::vector<torch::Tensor> k(layers), v(layers);
  for (std::size_t l = 0; l < layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      const std::string name = std::string(kv == 0 ? "k." : "v.") + std::to_string(l);
      auto it = all.find(name);
      if (it == all.end()) return refuse("no tensor '" + name + "'");
      const auto& ref = it->second;
      const auto& want = kv == 0 ? probe.k[l] : probe.v[l];  // [1, Hkv, 1, D]
      const std::vector<std::int64_t> shape{want.size(0), want.size(1), n, want.size(3)};
      if (ref.shape != shape || ref.dtype != st_dtype(want.scalar_type()))
        return refuse("tensor '" + name + "' does not fit this model's cache");
      (kv == 0 ? k : v)[l] = to_torch(ref);
    }
  }
  const auto* idp = static_cast<const std::int64_t*>(ids_it->second.data);
  std::vector<std::int64_t> ids(idp, idp + n);
  s.invalidate_cache();
  s.ensure_capacity(n);
  for (std::size_t l = 0; l < layers; ++l) {
    s.cache.k[l].narrow(2, 0, n).copy_(k[l]);
    s.cache.v[l].narrow(2, 0, n).copy_(v[l]);
  }
  s.cache.n_past = n;
  s.cached_ids = std::move(ids);
  return true;
}

std::vector<std::int64_t> ChatSession::prompt_tokens(const std::string& question) const {
  return impl_->encode(question);
}

std::string ChatSession::render_prompt(const std::string& question) const {
  return impl_->tmpl.render(impl_->turns(question));
}

double ChatSession::load_ms() const { return impl_->load_ms; }
std::int64_t ChatSession::context_length() const { return impl_->model->cfg.text.max_position_embeddings; }
std::string ChatSession::dtype_name() const { return dtype_choice_name(impl_->dtype_choice); }
std::string ChatSession::weights_name() const { return st::residency_name(impl_->weights); }
std::string ChatSession::weight_format() const { return m::llava_weight_format(*impl_->model); }
ChatImageAspect ChatSession::image_aspect() const {
  return impl_->aspect == m::ImageAspect::pad_square ? ChatImageAspect::pad : ChatImageAspect::crop;
}
std::string ChatSession::device_name() const { return impl_->device_choice.str(); }

ChatAnswer ChatSession::ask(const std::string& question_in, const SamplerConfig& cfg,
                            const std::function<void(const std::string&)>& on_text) {
  cfg.validate();
  Impl& s = *impl_;
  const std::string question = strip(question_in);
  if (question.empty()) throw InputError("chat: the question is empty");
  torch::NoGradGuard no_grad;
  ChatAnswer ans;
  ans.timings.load_ms = s.load_ms;
  const double t0 = now_ms();

  // The conversation prompt and what of it the cache already holds.
  const std::vector<std::int64_t> ids = s.encode(question);
  const auto n = static_cast<std::int64_t>(ids.size());
  const std::int64_t ctx = context_length();
  if (n >= ctx)
    throw InputError(fmt::format("chat: the conversation is {} tokens, the model's context is {}; start a new "
                                 "conversation (/reset) or ask a shorter question",
                                 n, ctx));
  const std::int64_t max_new = std::min<std::int64_t>(cfg.max_new_tokens, ctx - n);
  std::size_t p = 0;
  while (p < s.cached_ids.size() && p < ids.size() && s.cached_ids[p] == ids[p]) ++p;
  if (p == ids.size()) --p;  // the last prompt token is fed again for its logits
  const std::int64_t image_id = s.image_tokens.image_token_id;
  while (p > 0 && p < ids.size() && ids[p] == image_id && ids[p - 1] == image_id) --p;  // never split the image
  if (s.cache.n_past < static_cast<std::int64_t>(p)) p = 0;  // (never: the cache holds at least cached_ids)
  s.cached_ids.resize(p);
  s.cache.n_past = static_cast<std::int64_t>(p);
  s.ensure_capacity(n + max_new - 1);
  ans.n_prompt_tokens = n;
  ans.n_reused_tokens = static_cast<std::int64_t>(p);

  // Prefill the rest (with the image features if the image falls in it).
  torch::Tensor suffix = ids_tensor(ids, p);  // [1, n - p]
  torch::Tensor feats;
  if (std::find(ids.begin() + static_cast<std::ptrdiff_t>(p), ids.end(), image_id) != ids.end()) {
    if (s.image.empty()) throw InputError("chat: the prompt has an image token but no image was given");
    if (!s.features.defined()) {
      const double ti = now_ms();
      auto px = m::pixel_values_from_bgr(s.image, s.processor, s.aspect);  // [1, 3, S, S]
      s.features = s.model->image_features(px);                             // [1, N, Dt]
      ans.timings.image_ms = now_ms() - ti;
    }
    feats = s.features;
  }
  check_interrupted();
  auto emb = s.model->embed_inputs(suffix, feats);               // [1, n - p, Dt]
  auto logits = s.model->logits(emb, &s.cache, /*last_only=*/true);  // [1, 1, V]
  s.cached_ids = ids;
  ans.timings.prefill_ms = now_ms() - t0;

  // Decode.
  SamplerState state(cfg.seed);
  state.add_context(ids);
  text::StreamDecoder decoder(*s.tok);
  text::StopStringFilter stops(s.tmpl.stop_strings());
  StripStream out(on_text);
  const double td = now_ms();
  std::int64_t n_steps = 0;
  ans.finish = FinishReason::length;
  for (;;) {
    const std::int64_t next = sample_next(cfg, state, logits.reshape({-1}));
    ans.tokens.push_back(next);
    if (std::find(s.eos_ids.begin(), s.eos_ids.end(), next) != s.eos_ids.end()) {
      ans.finish = FinishReason::eos;
      break;
    }
    out.push(stops.push(decoder.push(next)));
    if (stops.stopped()) {
      ans.finish = FinishReason::stop_string;
      break;
    }
    if (static_cast<std::int64_t>(ans.tokens.size()) >= max_new) break;
    check_interrupted();
    auto x = s.model->language_model->embed(torch::tensor({next}, torch::kInt64).view({1, 1}));  // [1, 1, Dt]
    logits = s.model->logits(x, &s.cache, /*last_only=*/true);
    s.cached_ids.push_back(next);
    ++n_steps;
  }
  if (!stops.stopped()) {
    out.push(stops.push(decoder.finish()));
    out.push(stops.finish());
  }
  ans.timings.decode_ms = now_ms() - td;
  ans.timings.decode_tokens_per_s = n_steps > 0 && ans.timings.decode_ms > 0 ? n_steps * 1000.0 / ans.timings.decode_ms : 0;
  ans.text = out.text();
  s.history.push_back({question, ans.text});
  log_debug("chat: prompt {} tokens ({} reused), {} generated ({}), prefill {:.0f} ms, decode {:.0f} ms", n, p,
            ans.tokens.size(), finish_reason_name(ans.finish), ans.timings.prefill_ms, ans.timings.decode_ms);
  return ans;
}

}  // namespace lli::pipelines
