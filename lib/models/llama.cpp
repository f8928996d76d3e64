// Ref: transformers/models/llama/modeling_llama.py (v4.45): LlamaForCausalLM with eager attention
// (torch < 2.1.1 in the reference run), LlamaRotaryEmbedding, LlamaRMSNorm, repeat_kv.
#include "models/llama.h"
#include "nn/grad_mode.h"

#include <cmath>
#include <string>

#include "lli/error.h"
#include "nn/attention.h"
#include "nn/decoder_ops_bf16.h"
#include "nn/linear_bf16.h"

namespace lli::models {

LlamaConfig parse_llama_config(const ConfigReader& r) {
  LlamaConfig c;
  const std::string model_type = r.get_string("model_type", "llama");
  if (model_type != "llama")
    throw ModelError(r.where("model_type") + ": unsupported language model \"" + model_type +
                     "\" (only \"llama\" is implemented)");
  c.vocab_size = r.get_int("vocab_size", c.vocab_size);
  c.hidden_size = r.get_int("hidden_size", c.hidden_size);
  c.intermediate_size = r.get_int("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = r.get_int("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.get_int("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = r.get_int("num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads <= 0)
    throw ModelError(r.where("num_attention_heads") + ": must be positive, got " +
                     std::to_string(c.num_attention_heads));
  c.head_dim = r.get_int("head_dim", c.hidden_size / c.num_attention_heads);
  if (r.has("hidden_act")) c.hidden_act = nn::parse_activation(r.get_string("hidden_act", ""), r.where("hidden_act"));
  c.max_position_embeddings = r.get_int("max_position_embeddings", c.max_position_embeddings);
  c.rms_norm_eps = r.get_double("rms_norm_eps", c.rms_norm_eps);
  c.rope_theta = r.get_double("rope_theta", c.rope_theta);
  c.attention_bias = r.get_bool("attention_bias", c.attention_bias);
  c.mlp_bias = r.get_bool("mlp_bias", c.mlp_bias);
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", c.tie_word_embeddings);
  c.bos_token_id = r.get_int("bos_token_id", c.bos_token_id);
  c.pad_token_id = r.get_int("pad_token_id", c.pad_token_id);
  if (r.has("eos_token_id")) {
    const auto& e = r.at("eos_token_id");
    c.eos_token_ids.clear();
    if (e.is_array()) {
      for (const auto& x : e) {
        if (!x.is_number_integer()) throw ModelError(r.where("eos_token_id") + ": expected integers, got " + e.dump());
        c.eos_token_ids.push_back(x.get<std::int64_t>());
      }
    } else {
      c.eos_token_ids.push_back(r.get_int("eos_token_id", 2));
    }
  }
  if (r.has("rope_scaling")) {
    auto rs = r.child("rope_scaling");
    // transformers 4.45 accepts the legacy "type" key as "rope_type".
    std::string type = rs.get_string("rope_type", rs.get_string("type", "default"));
    if (type == "default") {
      c.rope_type = RopeType::none;
    } else if (type == "linear") {
      c.rope_type = RopeType::linear;
      if (!rs.has("factor")) throw ModelError(rs.where("factor") + ": missing (required for linear rope scaling)");
      c.rope_factor = rs.get_double("factor", 1.0);
      if (!(c.rope_factor >= 1.0))
        throw ModelError(rs.where("factor") + ": must be >= 1, got " + std::to_string(c.rope_factor));
    } else {
      throw ModelError(rs.where("rope_type") + ": unsupported rope scaling \"" + type +
                       "\" (supported: default, linear)");
    }
  }
  if (r.get_int("pretraining_tp", 1) != 1) {
    // pretraining_tp > 1 only splits the matmuls in the reference; the math is the same.
  }

  r.require_positive("vocab_size", c.vocab_size);
  r.require_positive("hidden_size", c.hidden_size);
  r.require_positive("intermediate_size", c.intermediate_size);
  r.require_positive("num_hidden_layers", c.num_hidden_layers);
  r.require_positive("num_key_value_heads", c.num_key_value_heads);
  r.require_positive("head_dim", c.head_dim);
  if (c.head_dim % 2 != 0) throw ModelError(r.where("head_dim") + ": must be even, got " + std::to_string(c.head_dim));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw ModelError(r.where("num_key_value_heads") + ": num_attention_heads " + std::to_string(c.num_attention_heads) +
                     " is not a multiple of num_key_value_heads " + std::to_string(c.num_key_value_heads));
  return c;
}

void KVCache::truncate(std::int64_t n) {
  if (n < 0 || n > n_past)
    throw RuntimeError("KV cache: cannot truncate to " + std::to_string(n) + " positions (holds " +
                       std::to_string(n_past) + ")");
  n_past = n;
}

// ---- attention ----------------------------------------------------------------------------

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c)
    : n_head(c.num_attention_heads), n_kv_head(c.num_key_value_heads), head_dim(c.head_dim) {
  q_proj = register_module("q_proj", nn::Linear(c.hidden_size, n_head * head_dim, c.attention_bias));
  k_proj = register_module("k_proj", nn::Linear(c.hidden_size, n_kv_head * head_dim, c.attention_bias));
  v_proj = register_module("v_proj", nn::Linear(c.hidden_size, n_kv_head * head_dim, c.attention_bias));
  o_proj = register_module("o_proj", nn::Linear(n_head * head_dim, c.hidden_size, c.attention_bias));
}

namespace {
// rotate_half: cat(-x2, x1) over the last dim.
torch::Tensor rotate_half(const torch::Tensor& x) {
  const auto h = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}
}  // namespace

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                          KVCache* cache, std::int64_t layer) {
  const auto B = x.size(0), L = x.size(1);
  const auto qkv = nn::linear_group(x, {q_proj.get(), k_proj.get(), v_proj.get()});
  auto q = qkv[0].view({B, L, n_head, head_dim});                       // [B, L, H, hd]
  auto k = qkv[1].view({B, L, n_kv_head, head_dim});                    // [B, L, Hkv, hd]
  auto v = qkv[2].view({B, L, n_kv_head, head_dim}).transpose(1, 2);  // [B, Hkv, L, hd]
  if (nn::decoder_ops_bf16_applicable({&q, &k, &cos, &sin})) {
    nn::rotary_bf16_(q, cos, sin);  // in place, one pass each
    nn::rotary_bf16_(k, cos, sin);
    q = q.transpose(1, 2);  // [B, H, L, hd]
    k = k.transpose(1, 2);  // [B, Hkv, L, hd]
  } else {
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
    auto c = cos.unsqueeze(0).unsqueeze(0);  // [1, 1, L, hd]
    auto s = sin.unsqueeze(0).unsqueeze(0);
    q = q * c + rotate_half(q) * s;
    k = k * c + rotate_half(k) * s;
  }

  std::int64_t n_past = 0;
  torch::Tensor keys = k, values = v;
  if (cache) {
    n_past = cache->n_past;
    auto& ck = cache->k[static_cast<std::size_t>(layer)];
    auto& cv = cache->v[static_cast<std::size_t>(layer)];
    ck.narrow(2, n_past, L).copy_(k);
    cv.narrow(2, n_past, L).copy_(v);
    keys = ck.narrow(2, 0, n_past + L);  // [B, Hkv, n_past + L, hd]
    values = cv.narrow(2, 0, n_past + L);
  }
  nn::AttentionOptions opt;
  opt.scale_mode = nn::AttentionScale::divide_scores;
  opt.scale = std::sqrt(static_cast<double>(head_dim));
  opt.softmax_fp32 = true;
  opt.causal = L > 1;
  opt.causal_offset = n_past;
  auto o = nn::attention(q, keys, values, {}, opt);                   // [B, H, L, hd]
  o = o.transpose(1, 2).contiguous().reshape({B, L, n_head * head_dim});
  return o_proj(o);
}

// ---- MLP, layer, model --------------------------------------------------------------------

LlamaMLPImpl::LlamaMLPImpl(const LlamaConfig& c) : act(c.hidden_act) {
  gate_proj = register_module("gate_proj", nn::Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
  up_proj = register_module("up_proj", nn::Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
  down_proj = register_module("down_proj", nn::Linear(c.intermediate_size, c.hidden_size, c.mlp_bias));
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x) {
  const auto gu = nn::linear_group(x, {gate_proj.get(), up_proj.get()});
  auto g = gu[0], u = gu[1];  // [B, L, F]
  if (act == nn::Activation::silu && nn::decoder_ops_bf16_applicable({&g, &u})) return down_proj(nn::silu_mul_bf16(g, u));
  return down_proj(nn::apply_activation(g, act) * u);
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c) {
  self_attn = register_module("self_attn", LlamaAttention(c));
  mlp = register_module("mlp", LlamaMLP(c));
  input_layernorm = register_module("input_layernorm", nn::RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", nn::RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                             const torch::Tensor& sin, KVCache* cache, std::int64_t layer) {
  auto [h, hn] = post_attention_layernorm->forward_add(x, self_attn(input_layernorm(x), cos, sin, cache, layer));
  return h + mlp(hn);
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c) {
  embed_tokens = register_module("embed_tokens", nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layer_list.push_back(LlamaDecoderLayer(c));
    layers->push_back(layer_list.back());
  }
  norm = register_module("norm", nn::RMSNorm(c.hidden_size, c.rms_norm_eps));
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c) : cfg(c) {
  model = register_module("model", LlamaModel(c));
  if (!c.tie_word_embeddings)
    lm_head = register_module("lm_head", nn::Linear(c.hidden_size, c.vocab_size, /*bias=*/false));
  // inv_freq = 1 / theta^(arange(0, d, 2) / d), fp32, as LlamaRotaryEmbedding computes it.
  auto idx = torch::arange(0, c.head_dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(c.head_dim);
  inv_freq = torch::reciprocal(torch::pow(c.rope_theta, idx));
  if (c.rope_type == RopeType::linear) inv_freq = inv_freq / c.rope_factor;
}

const torch::Tensor& LlamaForCausalLMImpl::output_weight() const {
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

std::pair<torch::Tensor, torch::Tensor> LlamaForCausalLMImpl::rotary(std::int64_t start, std::int64_t n,
                                                                     torch::Dtype dtype, torch::Device device) const {
  auto pos = torch::arange(start, start + n, torch::TensorOptions().dtype(torch::kInt64)).to(torch::kFloat32);
  auto freqs = pos.unsqueeze(1) * inv_freq.unsqueeze(0);  // [n, hd/2]
  auto emb = torch::cat({freqs, freqs}, -1);              // [n, hd]
  return {emb.cos().to(device, dtype), emb.sin().to(device, dtype)};
}

torch::Tensor LlamaForCausalLMImpl::embed(const torch::Tensor& ids) {
  nn::ForwardGuard no_grad;
  return model->embed_tokens(ids.to(model->embed_tokens->weight.device()));
}

KVCache LlamaForCausalLMImpl::make_cache(std::int64_t capacity, std::int64_t batch) const {
  const auto& w = model->embed_tokens->weight;
  auto opts = torch::TensorOptions().dtype(w.scalar_type()).device(w.device());
  KVCache c;
  for (std::int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    c.k.push_back(torch::empty({batch, cfg.num_key_value_heads, capacity, cfg.head_dim}, opts));
    c.v.push_back(torch::empty({batch, cfg.num_key_value_heads, capacity, cfg.head_dim}, opts));
  }
  return c;
}

torch::Tensor LlamaForCausalLMImpl::forward(const torch::Tensor& embeds, KVCache* cache, bool last_only,
                                            const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  auto h = final_hidden(embeds, cache, last_only, tap);                                // [B, L or 1, D]
  auto logits = lm_head ? lm_head->forward(h) : nn::linear(h, output_weight());  // lm_head may be quantized
  return logits.to(torch::kFloat32);                                                // [B, L or 1, V]
}

torch::Tensor LlamaForCausalLMImpl::final_hidden(const torch::Tensor& embeds, KVCache* cache, bool last_only,
                                                 const nn::Tap& tap) {
  nn::ForwardGuard no_grad;
  const auto& w = model->embed_tokens->weight;
  auto h = embeds.to(w.device(), w.scalar_type());  // [B, L, D]
  const auto B = h.size(0), L = h.size(1);
  std::int64_t start = 0;
  if (cache) {
    if (static_cast<std::int64_t>(cache->k.size()) != cfg.num_hidden_layers)
      throw RuntimeError("KV cache has " + std::to_string(cache->k.size()) + " layers, the model " +
                         std::to_string(cfg.num_hidden_layers));
    if (cache->k[0].size(0) != B)
      throw RuntimeError("KV cache batch " + std::to_string(cache->k[0].size(0)) + " != input batch " +
                         std::to_string(B));
    start = cache->n_past;
    if (start + L > cache->capacity())
      throw RuntimeError("context is full: " + std::to_string(start) + " + " + std::to_string(L) +
                         " positions exceed the KV cache capacity of " + std::to_string(cache->capacity()));
  }
  auto [cos, sin] = rotary(start, L, h.scalar_type(), h.device());
  for (std::int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    nn::tap_if(tap, "text.hidden_state", i, h);
    h = model->layer_list[static_cast<std::size_t>(i)]->forward(h, cos, sin, cache, i);
  }
  if (cache) cache->n_past = start + L;
  if (last_only) h = h.narrow(1, L - 1, 1);
  h = model->norm(h);
  nn::tap_if(tap, "text.hidden_state", cfg.num_hidden_layers, h);
  return h;
}

}  // namespace lli::models
