// Ref: transformers/models/clip/modeling_clip.py CLIPTextModel / CLIPTextTransformer (v4.45),
// eager attention; see clip_text.h.
#include "models/clip_text.h"
#include "nn/grad_mode.h"

#include <limits>
#include <string>

#include "lli/error.h"
#include "lli/log.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"

namespace lli::models {

namespace {

// torch.finfo(dtype).min: the additive value of a masked key.
double lowest(torch::Dtype dt) {
  switch (dt) {
    case torch::kFloat64:
      return std::numeric_limits<double>::lowest();
    case torch::kBFloat16:
      return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    case torch::kHalf:
      return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    default:
      return static_cast<double>(std::numeric_limits<float>::lowest());
  }
}

}  // namespace

CLIPTextConfig parse_clip_text_config(const ConfigReader& r, const CLIPTextConfig& base) {
  CLIPTextConfig c = base;
  parse_clip_encoder_config(r, c);
  c.vocab_size = r.get_int("vocab_size", c.vocab_size);
  c.max_position_embeddings = r.get_int("max_position_embeddings", c.max_position_embeddings);
  c.pad_token_id = r.get_int("pad_token_id", c.pad_token_id);
  c.bos_token_id = r.get_int("bos_token_id", c.bos_token_id);
  c.eos_token_id = r.get_int("eos_token_id", c.eos_token_id);
  r.require_positive("vocab_size", c.vocab_size);
  r.require_positive("max_position_embeddings", c.max_position_embeddings);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Modules

CLIPTextEmbeddingsImpl::CLIPTextEmbeddingsImpl(const CLIPTextConfig& c) {
  token_embedding = register_module("token_embedding", nn::Embedding(c.vocab_size, c.hidden_size));
  position_embedding = register_module("position_embedding", nn::Embedding(c.max_position_embeddings, c.hidden_size));
}

torch::Tensor CLIPTextEmbeddingsImpl::forward(const torch::Tensor& input_ids) {
  const auto T = input_ids.size(1);
  auto tokens = token_embedding(input_ids);                                 // [B, T, D]
  return tokens + position_embedding->weight.narrow(0, 0, T).unsqueeze(0);  // position_ids = arange(T)
}

CLIPTextTransformerImpl::CLIPTextTransformerImpl(const CLIPTextConfig& c) : cfg(c) {
  embeddings = register_module("embeddings", CLIPTextEmbeddings(c));
  encoder = register_module("encoder", nn::CLIPEncoder(c.layer_config(), c.num_hidden_layers));
  final_layer_norm = register_module("final_layer_norm", nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
}

CLIPTextOutput CLIPTextTransformerImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                                const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.size(1) == 0 ||
      !c10::isIntegralType(input_ids.scalar_type(), /*includeBool=*/false))
    throw InputError("CLIP text encoder: input_ids must be a [B, T] integer tensor with T >= 1, got " +
                     (input_ids.defined()
                          ? std::string(c10::toString(input_ids.scalar_type())) + " " + c10::str(input_ids.sizes())
                          : std::string("none")));
  const auto B = input_ids.size(0), T = input_ids.size(1);
  if (T > cfg.max_position_embeddings)
    throw InputError("CLIP text encoder: " + std::to_string(T) + " tokens, more than max_position_embeddings " +
                     std::to_string(cfg.max_position_embeddings) + " (truncate the prompt)");
  if (attention_mask.defined() && attention_mask.sizes() != input_ids.sizes())
    throw InputError("CLIP text encoder: attention_mask has shape " + c10::str(attention_mask.sizes()) +
                     ", input_ids " + c10::str(input_ids.sizes()));
  const auto& w = embeddings->token_embedding->weight;
  auto ids = input_ids.to(w.device(), torch::kInt64);  // [B, T]
  if (B > 0) {
    const auto lo = ids.min().item<std::int64_t>(), hi = ids.max().item<std::int64_t>();
    if (lo < 0 || hi >= cfg.vocab_size)
      throw InputError("CLIP text encoder: token id " + std::to_string(lo < 0 ? lo : hi) + " is outside [0, " +
                       std::to_string(cfg.vocab_size) + ") (tokenizer and text encoder do not match?)");
  }

  auto h = embeddings->forward(ids);  // [B, T, D]
  nn::tap_if(tap, "text.hidden_state", 0, h);
  // Padding mask as transformers' _prepare_4d_attention_mask: finfo.min where mask != 1. The
  // causal part is added by the layers.
  torch::Tensor mask;  // [B, 1, 1, T] additive, or undefined
  if (attention_mask.defined()) {
    auto m = attention_mask.to(w.device()).view({B, 1, 1, T});
    mask = torch::zeros({B, 1, 1, T}, h.options()).masked_fill(m != 1, lowest(h.scalar_type()));
  }
  h = encoder->forward(h, mask, /*n=*/-1,
                       [&](std::int64_t i, const torch::Tensor& x) { nn::tap_if(tap, "text.hidden_state", i + 1, x); });
  auto last = final_layer_norm(h);  // [B, T, D]
  nn::tap_if(tap, "text.last_hidden_state", -1, last);

  // Pooled output: the state at each row's EOS (transformers compares ids as int32).
  auto ids32 = ids.to(torch::kInt32);
  auto eos_pos = cfg.pooling() == CLIPTextPooling::argmax_id ? ids32.argmax(-1)  // [B]
                                                             : ids32.eq(cfg.eos_token_id).to(torch::kInt32).argmax(-1);
  auto rows = torch::arange(B, ids.options());
  auto pooled = last.index({rows, eos_pos});  // [B, D]
  return {last, pooled};
}

CLIPTextModelImpl::CLIPTextModelImpl(const CLIPTextConfig& c) : cfg(c) {
  text_model = register_module("text_model", CLIPTextTransformer(c));
}

CLIPTextOutput CLIPTextModelImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                          const nn::Tap& tap) {
  return text_model->forward(input_ids, attention_mask, tap);
}

// ---------------------------------------------------------------------------------------------
// Loading

CLIPTextModel load_clip_text(const std::filesystem::path& dir, const CLIPTextLoadOptions& opts) {
  if (opts.dtype != torch::kFloat32 && opts.dtype != torch::kBFloat16 && opts.dtype != torch::kHalf)
    throw ModelError("CLIP text encoder: unsupported compute dtype " + std::string(c10::toString(opts.dtype)) +
                     " (f32, bf16, or f16 on CUDA)");
  if (opts.dtype == torch::kHalf && opts.device.is_cpu())
    throw ModelError("CLIP text encoder: fp16 compute is not supported on CPU (use f32 or bf16)");

  const auto cfg_path = dir / "config.json";
  const auto j = read_json_file(cfg_path);
  const CLIPTextConfig cfg = parse_clip_text_config(ConfigReader(j, cfg_path.string()));

  auto ckpt = st::Checkpoint::open(dir);
  TensorMap tensors = load_tensors(ckpt);
  tensors.erase("text_model.embeddings.position_ids");  // a buffer older exports store; always arange

  CLIPTextModel model(cfg);
  BindOptions bo;
  bo.dtype = opts.dtype;
  bo.device = opts.device;
  bo.source = ckpt.source();
  bind_weights(*model, tensors, bo);
  log_debug("loaded CLIP text encoder from {}: D{} L{} H{} ffn {} positions {} vocab {} pooling {}, {}", dir.string(),
            cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.max_position_embeddings, cfg.vocab_size,
            cfg.pooling() == CLIPTextPooling::argmax_id ? "argmax(input_ids)" : "first eos", c10::toString(opts.dtype));
  return model;
}

}  // namespace lli::models
