// Ref: transformers/models/llava/modeling_llava.py LlavaForConditionalGeneration (v4.45):
// get image features (hidden_states[vision_feature_layer], strategy, projector), merge by
// masked_scatter over the expanded <image> tokens, LlamaForCausalLM; configuration_llava.py.
#include "models/llava.h"
#include "nn/grad_mode.h"

#include <algorithm>
#include <string>

#include "lli/error.h"
#include "lli/log.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "nn/quant_linear.h"

namespace lli::models {

// ---- config -------------------------------------------------------------------------------

std::int64_t LlavaConfig::tokens_per_image() const {
  return vision.num_patches() + (select_strategy == VisionSelect::full ? 1 : 0);
}

std::vector<std::int64_t> LlavaConfig::feature_layer_indices() const {
  std::vector<std::int64_t> out;
  for (auto l : vision_feature_layers) out.push_back(l < 0 ? vision.num_hidden_layers + 1 + l : l);
  return out;
}

LlavaConfig parse_llava_config(const nlohmann::json& j, const std::string& source) {
  ConfigReader r(j, source);
  const std::string model_type = r.get_string("model_type", "llava");
  if (model_type != "llava")
    throw ModelError(r.where("model_type") + ": \"" + model_type + "\" is not a LLaVA-1.5 model (expected \"llava\")");
  LlavaConfig c;

  if (r.has("vision_config")) {
    auto vr = r.child("vision_config");
    const std::string vt = vr.get_string("model_type", "clip_vision_model");
    if (vt != "clip_vision_model")
      throw ModelError(vr.where("model_type") + ": unsupported vision tower \"" + vt +
                       "\" (only \"clip_vision_model\" is implemented)");
    c.vision = parse_clip_vision_config(vr);
  } else {
    // LlavaConfig's built-in vision tower when vision_config is absent (CLIP ViT-L/14-336).
    CLIPVisionConfig v;
    v.intermediate_size = 4096;
    v.hidden_size = 1024;
    v.patch_size = 14;
    v.image_size = 336;
    v.num_hidden_layers = 24;
    v.num_attention_heads = 16;
    v.projection_dim = 768;
    c.vision = parse_clip_vision_config(r.child("vision_config"), v);
  }
  c.text = parse_llama_config(r.child("text_config"));

  c.image_token_index = r.has("image_token_index") ? r.get_int("image_token_index", 32000)
                                                   : r.get_int("image_token_id", 32000);
  if (r.has("projector_hidden_act"))
    c.projector_hidden_act = nn::parse_activation(r.get_string("projector_hidden_act", ""), r.where("projector_hidden_act"));
  const std::string strategy = r.get_string("vision_feature_select_strategy", "default");
  if (strategy == "default")
    c.select_strategy = VisionSelect::drop_cls;
  else if (strategy == "full")
    c.select_strategy = VisionSelect::full;
  else
    throw ModelError(r.where("vision_feature_select_strategy") + ": \"" + strategy +
                     "\" is not one of \"default\", \"full\"");
  if (r.has("vision_feature_layer")) {
    const auto& v = r.at("vision_feature_layer");
    c.vision_feature_layers.clear();
    if (v.is_number_integer()) {
      c.vision_feature_layers.push_back(v.get<std::int64_t>());
    } else if (v.is_array() && !v.empty()) {
      for (const auto& x : v) {
        if (!x.is_number_integer())
          throw ModelError(r.where("vision_feature_layer") + ": expected an integer or a list of integers, got " +
                           v.dump());
        c.vision_feature_layers.push_back(x.get<std::int64_t>());
      }
    } else {
      throw ModelError(r.where("vision_feature_layer") + ": expected an integer or a list of integers, got " +
                       v.dump());
    }
  }
  for (auto l : c.vision_feature_layers) {
    const auto n = c.vision.num_hidden_layers;
    const auto idx = l < 0 ? n + 1 + l : l;
    if (idx < 0 || idx > n)
      throw ModelError(r.where("vision_feature_layer") + ": layer " + std::to_string(l) +
                       " is out of range for a vision tower with " + std::to_string(n) +
                       " layers (valid: -" + std::to_string(n + 1) + ".." + std::to_string(n) + ")");
  }
  c.image_seq_length = r.get_int("image_seq_length", c.image_seq_length);
  c.multimodal_projector_bias = r.get_bool("multimodal_projector_bias", c.multimodal_projector_bias);
  c.pad_token_id = r.get_int("pad_token_id", c.pad_token_id);
  c.tie_word_embeddings_top = r.get_bool("tie_word_embeddings", c.tie_word_embeddings_top);
  return c;
}

LlavaConfig load_llava_config(const std::filesystem::path& dir) {
  auto path = dir / "config.json";
  auto j = read_json_file(path);
  return parse_llava_config(j, path.string());
}

// ---- model --------------------------------------------------------------------------------

LlavaImpl::LlavaImpl(const LlavaConfig& c) : cfg(c) {
  vision_tower = register_module("vision_tower", CLIPVisionModel(c.vision));
  LlavaProjectorConfig pc;
  pc.in_features = c.vision.hidden_size * static_cast<std::int64_t>(c.vision_feature_layers.size());
  pc.out_features = c.text.hidden_size;
  pc.act = c.projector_hidden_act;
  pc.bias = c.multimodal_projector_bias;
  multi_modal_projector = register_module("multi_modal_projector", LlavaMultiModalProjector(pc));
  language_model = register_module("language_model", LlamaForCausalLM(c.text));
}

torch::Dtype LlavaImpl::dtype() const { return language_model->model->embed_tokens->weight.scalar_type(); }
torch::Device LlavaImpl::device() const { return language_model->model->embed_tokens->weight.device(); }

torch::Tensor LlavaImpl::image_features(const torch::Tensor& pixel_values, const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  const auto indices = cfg.feature_layer_indices();
  const auto up_to = *std::max_element(indices.begin(), indices.end());
  auto states = vision_tower->hidden_states(pixel_values, up_to, tap);
  std::vector<torch::Tensor> parts;
  for (std::size_t i = 0; i < indices.size(); ++i) {
    auto sel = states[static_cast<std::size_t>(indices[i])];  // [n_img, 1 + P, Dv]
    if (i == 0) nn::tap_if(tap, "vision.selected_layer", -1, sel);
    if (cfg.select_strategy == VisionSelect::drop_cls) sel = sel.narrow(1, 1, sel.size(1) - 1);
    parts.push_back(sel);
  }
  auto selected = parts.size() == 1 ? parts[0] : torch::cat(parts, -1);  // [n_img, N, Dv * k]
  nn::tap_if(tap, "vision.selected_features", -1, selected);
  auto out = multi_modal_projector(selected, tap);  // [n_img, N, Dt]
  nn::tap_if(tap, "projector.output", -1, out);
  return out;
}

torch::Tensor LlavaImpl::embed_inputs(const torch::Tensor& input_ids, const torch::Tensor& image_features,
                                      const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  if (input_ids.dim() != 2)
    throw InputError("input_ids must be [B, L], got " + c10::str(input_ids.sizes()));
  auto ids = input_ids.to(device(), torch::kInt64);
  auto is_image = ids == cfg.image_token_index;  // [B, L]
  const auto n_tokens = is_image.sum().item<std::int64_t>();
  const auto n_features = image_features.defined() ? image_features.size(0) * image_features.size(1) : 0;
  if (n_tokens != n_features)
    throw InputError("the prompt has " + std::to_string(n_tokens) + " image tokens (id " +
                     std::to_string(cfg.image_token_index) + ") but there are " + std::to_string(n_features) +
                     " image features" +
                     (image_features.defined() ? " (" + std::to_string(image_features.size(0)) + " image(s) x " +
                                                     std::to_string(image_features.size(1)) + ")"
                                               : std::string(" (no image)")));
  auto vocab = cfg.text.vocab_size;
  auto safe_ids = ids.masked_fill(is_image, 0);
  if ((safe_ids < 0).any().item<bool>() || (safe_ids >= vocab).any().item<bool>())
    throw InputError("input_ids contain a token id outside the vocabulary (0.." + std::to_string(vocab - 1) + ")");
  auto emb = language_model->embed(safe_ids);  // [B, L, Dt]
  if (n_tokens > 0) {
    auto mask = is_image.unsqueeze(-1).expand_as(emb);
    emb = emb.masked_scatter(mask, image_features.to(emb.device(), emb.scalar_type()));
  }
  nn::tap_if(tap, "inputs_embeds", -1, emb);
  return emb;
}

torch::Tensor LlavaImpl::logits(const torch::Tensor& inputs_embeds, KVCache* cache, bool last_only,
                                const nn::Tap& tap) {
  return language_model->forward(inputs_embeds, cache, last_only, tap);
}

KVCache LlavaImpl::make_cache(std::int64_t capacity, std::int64_t batch) const {
  return language_model->make_cache(capacity, batch);
}

// ---- loading ------------------------------------------------------------------------------

Llava load_llava(const std::filesystem::path& dir, const LlavaLoadOptions& opts) {
  LlavaConfig cfg = load_llava_config(dir);
  if (opts.dtype != torch::kFloat32 && opts.dtype != torch::kBFloat16 && opts.dtype != torch::kHalf)
    throw ModelError("LLaVA: unsupported compute dtype " + std::string(c10::toString(opts.dtype)) +
                     " (f32, bf16, or f16 on CUDA)");
  if (opts.dtype == torch::kHalf && opts.device.is_cpu())
    throw ModelError("LLaVA: fp16 compute is not supported on CPU (use f32 or bf16)");

  st::OpenOptions oo;
  oo.residency = opts.device.is_cpu() ? opts.weights : st::Residency::mmap;
  if (oo.residency == st::Residency::copy) {
    oo.float_dtype = to_st_dtype(opts.dtype);
    oo.convert = [](const std::string& name) { return !nn::is_quant_array_name(name); };
  }
  oo.progress = opts.progress;
  auto ckpt = st::Checkpoint::open(dir, "model", oo);
  TensorMap tensors = load_tensors(ckpt);
  // Older transformers saved the CLIP position_ids buffer; positions are arange here.
  tensors.erase("vision_tower.vision_model.embeddings.position_ids");
  const std::string emb = "language_model.model.embed_tokens.weight", head = "language_model.lm_head.weight";
  if (!cfg.text.tie_word_embeddings && !tensors.count(head) && tensors.count(emb) && cfg.tie_word_embeddings_top) {
    log_info("{}: no {} in the checkpoint; tying the output matrix to embed_tokens (tie_word_embeddings)",
             ckpt.source(), head);
    cfg.text.tie_word_embeddings = true;
  }
  if (cfg.text.tie_word_embeddings) {
    if (!tensors.count(emb) && tensors.count(head)) tensors[emb] = tensors[head];
    tensors.erase(head);
  }

  Llava model(cfg);
  BindOptions bo;
  bo.dtype = opts.dtype;
  bo.device = opts.device;
  bo.source = ckpt.source();
  // Quantized linears (lli-quantize): attached as they are, on the CPU.
  const auto meta = ckpt.metadata().find(nn::kQuantMetadataKey);
  const std::string format = meta == ckpt.metadata().end() ? "" : meta->second;
  if (!opts.device.is_cpu() && !format.empty())
    throw ModelError(ckpt.source() + ": a " + format + " checkpoint runs on the CPU only");
  bo.optional_keys = nn::attach_quantized_linears(*model, tensors, "", format, ckpt.source(), opts.dtype);
  bind_weights(*model, tensors, bo);
  if (opts.quantize && bo.optional_keys.empty()) {
    if (!opts.device.is_cpu()) throw ModelError("--quantize: quantized weights run on the CPU only");
    const double t0 = now_ms();
    const auto r = nn::quantize_linears(*model, *opts.quantize, llava_quantizable);
    log_info("quantized {} linears to {}: {:.2f} -> {:.2f} GB in {:.1f} s", r.linears,
             nn::quant::qtype_name(*opts.quantize), r.float_bytes / 1e9, r.quant_bytes / 1e9,
             (now_ms() - t0) / 1000.0);
  }
  log_debug("loaded LLaVA from {}: vision {}x{} L{} D{}, text L{} D{} H{}/{} V{}", dir.string(), cfg.vision.image_size,
            cfg.vision.image_size, cfg.vision.num_hidden_layers, cfg.vision.hidden_size, cfg.text.num_hidden_layers,
            cfg.text.hidden_size, cfg.text.num_attention_heads, cfg.text.num_key_value_heads, cfg.text.vocab_size);
  return model;
}

bool llava_quantizable(const std::string& module_name) { return module_name.rfind("language_model.", 0) == 0; }

std::string llava_weight_format(const LlavaImpl& model) {
  for (const auto& item : model.named_modules("", false))
    if (auto* l = dynamic_cast<const nn::LinearImpl*>(item.value().get()))
      if (l->qweight && llava_quantizable(item.key())) return nn::quant::qtype_name(l->qweight->type);
  const auto t = model.language_model->model->embed_tokens->weight.scalar_type();
  return t == torch::kBFloat16 ? "bf16" : t == torch::kHalf ? "f16" : "f32";
}

torch::Tensor expand_image_tokens(const torch::Tensor& ids, std::int64_t image_token, std::int64_t n) {
  if (ids.dim() != 2 || ids.size(0) != 1) throw InputError("expand_image_tokens: ids must be [1, L]");
  auto c = ids.to(torch::kCPU, torch::kInt64).contiguous();
  const auto* p = c.data_ptr<std::int64_t>();
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < c.size(1); ++i) {
    if (p[i] == image_token)
      out.insert(out.end(), static_cast<std::size_t>(n), image_token);
    else
      out.push_back(p[i]);
  }
  return torch::tensor(out, torch::kInt64).unsqueeze(0);
}

std::vector<std::int64_t> generate_greedy(LlavaImpl& model, const torch::Tensor& inputs_embeds, KVCache& cache,
                                          std::int64_t max_new_tokens, const std::vector<std::int64_t>& stop_ids,
                                          const std::function<bool(std::int64_t)>& on_token) {
  nn::ForwardGuard no_grad;
  std::vector<std::int64_t> out;
  torch::Tensor x = inputs_embeds;
  for (std::int64_t step = 0; step < max_new_tokens; ++step) {
    auto logits = model.logits(x, &cache, /*last_only=*/true);  // [1, 1, V]
    const auto next = logits.reshape({-1}).argmax().item<std::int64_t>();
    out.push_back(next);
    if (on_token && !on_token(next)) break;
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) break;
    if (step + 1 == max_new_tokens) break;
    x = model.language_model->embed(torch::tensor({next}, torch::kInt64).view({1, 1}));
  }
  return out;
}

}  // namespace lli::models
