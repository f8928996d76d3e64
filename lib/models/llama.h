// LLaMA decoder (the LLaVA language model), module tree = transformers' LlamaForCausalLM
// state_dict: model.{embed_tokens, layers.N.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj,
// input_layernorm, post_attention_layernorm}, norm}, lm_head (absent when tie_word_embeddings).
// The KV cache is run state, kept outside the weights (KVCache below).
// Ref: transformers/models/llama/modeling_llama.py, configuration_llama.py (v4.45), eager attention.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "models/config_json.h"
#include "nn/activation.h"
#include "nn/layers.h"
#include "nn/rms_norm.h"
#include "nn/tap.h"

namespace lli::models {

enum class RopeType { none, linear };  // none = transformers' "default"

// Defaults = transformers' LlamaConfig() (LLaMA-7B).
struct LlamaConfig {
  std::int64_t vocab_size = 32000;
  std::int64_t hidden_size = 4096;
  std::int64_t intermediate_size = 11008;
  std::int64_t num_hidden_layers = 32;
  std::int64_t num_attention_heads = 32;
  std::int64_t num_key_value_heads = 32;  // absent: = num_attention_heads
  std::int64_t head_dim = 128;            // absent: hidden_size / num_attention_heads
  nn::Activation hidden_act = nn::Activation::silu;
  std::int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeType rope_type = RopeType::none;
  double rope_factor = 1.0;  // linear: positions divided by this
  bool attention_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  std::int64_t bos_token_id = 1;
  std::vector<std::int64_t> eos_token_ids{2};
  std::int64_t pad_token_id = -1;  // -1: none
};

// Reads a text_config object (model_type must be "llama" when given); absent keys take
// LlamaConfig's defaults. Validates sizes and rope_scaling.
LlamaConfig parse_llama_config(const ConfigReader& r);

// Per-layer key/value cache, preallocated to `capacity` positions so decoding never reallocates.
struct KVCache {
  std::vector<torch::Tensor> k, v;  // per layer: [B, n_kv_head, capacity, head_dim]
  std::int64_t n_past = 0;          // positions filled
  std::int64_t capacity() const { return k.empty() ? 0 : k[0].size(2); }
  void clear() { n_past = 0; }
  void truncate(std::int64_t n);  // keep the first n positions (n <= n_past)
};

struct LlamaAttentionImpl : torch::nn::Module {
  explicit LlamaAttentionImpl(const LlamaConfig& cfg);
  // x: [B, L, D]; cos/sin: [L, head_dim]; cache: optional (layer `layer`, positions from
  // cache->n_past) -> [B, L, D]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, KVCache* cache,
                        std::int64_t layer);
  std::int64_t n_head, n_kv_head, head_dim;
  nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};
TORCH_MODULE(LlamaAttention);

struct LlamaMLPImpl : torch::nn::Module {
  explicit LlamaMLPImpl(const LlamaConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x);  // down(act(gate(x)) * up(x))
  nn::Activation act;
  nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

struct LlamaDecoderLayerImpl : torch::nn::Module {
  explicit LlamaDecoderLayerImpl(const LlamaConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, KVCache* cache,
                        std::int64_t layer);
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  nn::RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

struct LlamaModelImpl : torch::nn::Module {
  explicit LlamaModelImpl(const LlamaConfig& cfg);
  nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<LlamaDecoderLayer> layer_list;
  nn::RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

struct LlamaForCausalLMImpl : torch::nn::Module {
  explicit LlamaForCausalLMImpl(const LlamaConfig& cfg);

  // ids: [B, L] int64 -> [B, L, D] in the weights' dtype.
  torch::Tensor embed(const torch::Tensor& ids);

  // embeds: [B, L, D]. Without a cache: a full causal pass from position 0. With a cache: the
  // positions continue at cache->n_past, keys/values are appended and n_past advances by L.
  // Returns fp32 logits [B, L, V] ([B, 1, V] when last_only).
  // Taps "text.hidden_state": index i < n = input of layer i, index n = after the final norm
  // (of the last position only when last_only).
  torch::Tensor forward(const torch::Tensor& embeds, KVCache* cache = nullptr, bool last_only = false,
                        const nn::Tap& tap = {});

  // forward() without the output projection: the final-norm hidden states [B, L or 1, D] in the
  // weights' dtype (training projects only the positions it scores).
  torch::Tensor final_hidden(const torch::Tensor& embeds, KVCache* cache = nullptr, bool last_only = false,
                             const nn::Tap& tap = {});

  // A cache for `capacity` positions in the weights' dtype and device.
  KVCache make_cache(std::int64_t capacity, std::int64_t batch = 1) const;

  // cos, sin for positions [start, start + n): each [n, head_dim], fp32 -> dtype.
  std::pair<torch::Tensor, torch::Tensor> rotary(std::int64_t start, std::int64_t n, torch::Dtype dtype,
                                                 torch::Device device) const;

  // lm_head.weight or the tied embed_tokens.weight (a quantized lm_head's is a zero-stride view:
  // compute through lm_head->forward).
  const torch::Tensor& output_weight() const;

  LlamaConfig cfg;
  LlamaModel model{nullptr};
  nn::Linear lm_head{nullptr};  // null when tie_word_embeddings
  torch::Tensor inv_freq;       // [head_dim / 2] fp32 (derived from the config, not a weight)
};
TORCH_MODULE(LlamaForCausalLM);

}  // namespace lli::models
