// Ref: see demo_llava.h.
#include "train/demo_llava.h"

#include <fmt/format.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"
#include "lli/tensor_io.h"
#include "models/config_json.h"
#include "models/llava.h"
#include "models/llava_preprocess.h"
#include "nn/grad_mode.h"
#include "pipelines/chat.h"
#include "sampling/sampler_config.h"
#include "text/chat_template.h"
#include "text/llama_tokenizer.h"
#include "train/train_util.h"
#include "world/shapes_world.h"

namespace lli::train {

namespace m = lli::models;
using json = nlohmann::json;

namespace {

constexpr const char* kTokenizerFiles[] = {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                                           "added_tokens.json"};

// config.json in the llava-hf layout: LLaVA-1.5's structure (CLIP ViT with quick_gelu, 2-layer gelu
// projector, LLaMA) at small widths, the last vision layer's patch features, tied word embeddings
// (half the bytes of a 32k-token vocabulary at this width).
json demo_llava_config(const DemoLlavaOptions& o, std::int64_t vocab, std::int64_t image_id, std::int64_t pad_id) {
  const int head_dim = o.text_hidden / o.heads;
  const int patches = (o.image_size / o.patch_size) * (o.image_size / o.patch_size);
  json vision = {{"model_type", "clip_vision_model"},
                 {"hidden_size", o.vision_hidden},
                 {"intermediate_size", 4 * o.vision_hidden},
                 {"num_hidden_layers", o.vision_layers},
                 {"num_attention_heads", o.heads},
                 {"image_size", o.image_size},
                 {"patch_size", o.patch_size},
                 {"projection_dim", o.vision_hidden},
                 {"hidden_act", "quick_gelu"},
                 {"layer_norm_eps", 1e-5}};
  json text = {{"model_type", "llama"},
               {"hidden_size", o.text_hidden},
               {"intermediate_size", (o.text_hidden * 8 / 3 + 31) / 32 * 32},
               {"num_hidden_layers", o.text_layers},
               {"num_attention_heads", o.heads},
               {"num_key_value_heads", o.heads},
               {"head_dim", head_dim},
               {"max_position_embeddings", 512},
               {"rms_norm_eps", 1e-5},
               {"rope_theta", 10000.0},  // LLaMA's RoPE base
               {"vocab_size", vocab},
               {"tie_word_embeddings", true}};
  return {{"architectures", {"LlavaForConditionalGeneration"}},
          {"model_type", "llava"},
          {"ignore_index", -100},
          {"image_token_index", image_id},
          {"image_seq_length", patches},
          {"pad_token_id", pad_id},
          {"projector_hidden_act", "gelu"},
          {"vision_feature_layer", -1},
          {"vision_feature_select_strategy", "default"},
          {"tie_word_embeddings", true},
          {"vocab_size", vocab},
          {"torch_dtype", o.fp16 ? "float16" : "float32"},
          {"text_config", text},
          {"vision_config", vision}};
}

// The CLIP processor squashing the whole image to the tower's input (no centre crop).
json demo_llava_preprocessor(int side) {
  return {{"image_processor_type", "CLIPImageProcessor"},
          {"processor_class", "LlavaProcessor"},
          {"do_resize", true},
          {"size", {{"height", side}, {"width", side}}},
          {"resample", 3},
          {"do_center_crop", false},
          {"crop_size", {{"height", side}, {"width", side}}},
          {"do_rescale", true},
          {"rescale_factor", 1.0 / 255.0},
          {"do_normalize", true},
          {"do_convert_rgb", true},
          {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
          {"image_std", {0.26862954, 0.26130258, 0.27577711}}};
}

// transformers' LLaVA / LLaMA / CLIP init reduced to one rule: every matrix (linears, embeddings,
// the patch convolution, position embeddings) and the class embedding ~ N(0, 0.02), norms' weights
// 1, biases 0; the projections that write into a residual stream (o_proj, down_proj, out_proj,
// fc2) scaled by 1 / sqrt(2 * layers) as in GPT-2, so that the stream does not grow with depth.
// only_text_layers: the language model's decoder layers and final norm alone (--reinit-text-layers).
void init_weights(m::LlavaImpl& model, std::uint64_t seed, const DemoLlavaOptions& o, bool only_text_layers = false) {
  torch::NoGradGuard ng;
  torch::manual_seed(seed);
  for (auto& p : model.named_parameters(true)) {
    const std::string& n = p.key();
    auto& t = p.value();
    if (only_text_layers && (n.rfind("language_model", 0) != 0 || ends_with(n, "embed_tokens.weight") ||
                             ends_with(n, "lm_head.weight")))
      continue;
    if (t.dim() >= 2 || ends_with(n, "class_embedding")) {
      t.normal_(0.0, 0.02);
      const bool residual_out = ends_with(n, "o_proj.weight") || ends_with(n, "down_proj.weight") ||
                                ends_with(n, "out_proj.weight") || ends_with(n, "fc2.weight");
      if (residual_out) {
        const int layers = n.rfind("language_model", 0) == 0 ? o.text_layers : o.vision_layers;
        t.div_(std::sqrt(2.0 * layers));
      }
    } else if (ends_with(n, "bias")) {
      t.zero_();
    } else if (ends_with(n, "weight")) {
      t.fill_(1.0);  // LayerNorm / RMSNorm
    } else {
      throw RuntimeError("demo-llava: no initialisation rule for the parameter " + n);
    }
  }
}

using Example = ChatExample;

// LLaVA's first training stage in miniature: the scene's caption as the answer to one fixed
// question. It names every object's colour and kind from left to right: a dense signal that gets
// the vision tower and the projector going long before the one-word answers do (measured: with the
// questions alone, colour answers stayed at chance, 0.17-0.23, for 700 steps).
// Easy to hard: over the first 30 % of the steps the objects shrink from 35-45 % of the shorter
// side (radius) to the world's 8-22 %, and their number grows from one (first 10 %) to two and
// three, then the world's 1-4. Measured without it (1-4 small objects from the start, with or
// without the caption task, patches of 6-24 px, learning rates 1e-3 and 3e-3): answers that need
// the image stayed at chance for 500-850 steps, even "What colour is the <shape>?" on one-object
// scenes; with objects of 40-45 % colour was learnt in 150 steps (one 24-px token).
world::SceneConfig curriculum(std::int64_t step, std::int64_t steps) {
  world::SceneConfig c;
  const double p = static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, steps));
  c.max_objects = std::min(c.max_objects, 1 + static_cast<int>(10 * p));
  c.min_objects = std::min(c.min_objects, c.max_objects);
  const double t = std::min(1.0, p / 0.3);  // 0 -> 1 over the first 30 %
  c.min_radius_frac = 0.35 + t * (c.min_radius_frac - 0.35);
  c.max_radius_frac = 0.45 + t * (c.max_radius_frac - 0.45);
  return c;
}

// The end of the question's last colour or shape word ("What colour is the star?" -> after "star",
// "How many circles are there?" -> after "circles", "What shape is the red object?" -> after
// "red"); npos when it has none.
std::size_t keyword_end(const std::string& q) {
  std::vector<std::string> words;
  for (int c = 0; c < world::kColourCount; ++c) words.emplace_back(world::colour_name(static_cast<world::Colour>(c)));
  for (int k = 0; k < world::kShapeCount; ++k) {
    words.emplace_back(world::shape_name(static_cast<world::Shape>(k)));
    words.emplace_back(world::shape_plural(static_cast<world::Shape>(k)));
  }
  auto letter = [](char ch) { return std::isalpha(static_cast<unsigned char>(ch)) != 0; };
  std::size_t best = std::string::npos;
  for (const auto& w : words)
    for (std::size_t at = q.find(w); at != std::string::npos; at = q.find(w, at + 1)) {
      const std::size_t end = at + w.size();
      if ((at > 0 && letter(q[at - 1])) || (end < q.size() && letter(q[end]))) continue;
      if (best == std::string::npos || end > best) best = end;
    }
  return best;
}

constexpr int kCaptionKind = 5;  // after the world's 5 question kinds in the statistics

Example make_example(const text::LlamaTokenizer& tok, const text::ImageTokenConfig& itc, const text::ChatTemplate& tmpl,
                     const std::string& question, const std::string& answer, int kind, std::int64_t image) {
  text::ChatTurn turn{question, std::nullopt, true};
  const auto prompt = text::encode_llava_prompt(tok, itc, tmpl.render({turn}));
  turn.answer = answer;
  Example e;
  e.ids = text::encode_llava_prompt(tok, itc, tmpl.render({turn}));
  if (e.ids.size() <= prompt.size() || !std::equal(prompt.begin(), prompt.end(), e.ids.begin()))
    throw RuntimeError("demo-llava: the prompt's tokens are not a prefix of the answered conversation's (question \"" +
                       question + "\")");
  e.answer_start = prompt.size();
  e.image = image;
  e.kind = kind;
  // The keyword loss's position and target (DemoLlavaOptions::keyword_weight): the question cut
  // after its keyword renders to a prefix of the conversation up to the keyword's last token.
  const std::size_t kw_end = keyword_end(question);
  if (kw_end != std::string::npos) {
    turn = {question.substr(0, kw_end), std::nullopt, true};
    const auto cut = text::encode_llava_prompt(tok, itc, tmpl.render({turn}));
    const auto mm = std::mismatch(cut.begin(), cut.end(), e.ids.begin(), e.ids.end());
    const auto common = static_cast<std::size_t>(mm.first - cut.begin());
    std::size_t a = e.answer_start;
    while (a < e.ids.size() && tok.id_to_piece(static_cast<text::TokenId>(e.ids[a])) == "\u2581") ++a;  // " 2": "▁", "2"
    if (common > 1 && common < e.answer_start && a < e.ids.size()) {
      e.keyword_pos = common - 1;
      e.keyword_target = e.ids[a];
    }
  }
  return e;
}

// Stage 1a: throw-away linear heads on the tower's last patch features (not saved), per-patch kind
// and colour classification: what a CLIP-pretrained tower would bring, learnt here from scratch.
// Measured: the tower learns kind faster this way than through the word alignment from the start
// (object patches' kind right: 0.32 vs 0.24 after 1,200 steps).
struct DenseHeads {
  explicit DenseHeads(std::int64_t width)
      : kind(torch::nn::Linear(width, world::kShapeCount + 1)),
        colour(torch::nn::Linear(width, world::kColourCount + 1)) {}
  std::vector<torch::Tensor> parameters() const {
    auto p = kind->parameters();
    for (auto& t : colour->parameters()) p.push_back(t);
    return p;
  }
  // patches: [n, N, Dv]; targets: n * N each (append_patch_targets). Counts right object patches.
  torch::Tensor loss(const torch::Tensor& patches, const std::vector<std::int64_t>& kind_t,
                     const std::vector<std::int64_t>& colour_t, std::int64_t& obj, std::int64_t& kind_ok,
                     std::int64_t& colour_ok) {
    const auto x = patches.reshape({-1, patches.size(2)});  // [n * N, Dv]
    const auto kl = kind->forward(x), cl = colour->forward(x);
    const auto kt = torch::tensor(kind_t, torch::kInt64), ct = torch::tensor(colour_t, torch::kInt64);
    {
      torch::NoGradGuard ng;
      const auto is_obj = kt != world::kShapeCount;
      obj += is_obj.sum().item<std::int64_t>();
      kind_ok += ((kl.argmax(1) == kt) & is_obj).sum().item<std::int64_t>();
      colour_ok += ((cl.argmax(1) == ct) & is_obj).sum().item<std::int64_t>();
    }
    return torch::nn::functional::cross_entropy(kl, kt) + torch::nn::functional::cross_entropy(cl, ct);
  }
  torch::nn::Linear kind, colour;
};

// Stage 1b, LLaVA's feature-alignment stage in miniature, per patch: the projected patch features (what the
// language model reads at the image positions) are trained to point in the direction of the word
// embeddings of the patch's colour and kind ("red", "star"; "background" where no object covers a
// quarter of the patch): cosine similarity to the 15 candidate words' embeddings (their first
// token), x 10, softmax, one cross-entropy for the colour word and one for the kind word. The
// language model then finds "star" in the image the way it finds a word of the prompt (measured:
// with the linear heads alone, per-patch kind 0.78, the trained LLaVA's kind answers stayed at chance,
// 0.18 after 800 steps; with this stage after them 0.71).
struct DenseAlignment {
  explicit DenseAlignment(const text::LlamaTokenizer& tok) {
    auto first = [&](const std::string& w) {
      const auto ids = tok.encode(w, false);
      if (ids.empty()) throw RuntimeError("demo-llava: the tokenizer encodes \"" + w + "\" as nothing");
      return static_cast<std::int64_t>(ids[0]);
    };
    for (int c = 0; c < world::kColourCount; ++c)
      words.push_back(first(world::colour_name(static_cast<world::Colour>(c))));
    for (int k = 0; k < world::kShapeCount; ++k)
      words.push_back(first(world::shape_name(static_cast<world::Shape>(k))));
    words.push_back(first("background"));
    std::vector<std::int64_t> sorted = words;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
      throw RuntimeError("demo-llava: two colour / shape words start with the same token");
  }
  // Candidate index of a patch target (append_patch_targets' classes).
  static std::int64_t colour_index(std::int64_t c) { return c == world::kColourCount ? kBg : c; }
  static std::int64_t kind_index(std::int64_t k) { return k == world::kShapeCount ? kBg : world::kColourCount + k; }
  static constexpr std::int64_t kBg = world::kColourCount + world::kShapeCount;

  // projected: [n, N, Dt]; targets: n * N each (append_patch_targets). Counts right object patches.
  torch::Tensor loss(m::LlavaImpl& model, const torch::Tensor& projected, const std::vector<std::int64_t>& kind_t,
                     const std::vector<std::int64_t>& colour_t, std::int64_t& obj, std::int64_t& kind_ok,
                     std::int64_t& colour_ok) const {
    const auto x = torch::nn::functional::normalize(projected.reshape({-1, projected.size(2)}),
                                                    torch::nn::functional::NormalizeFuncOptions().dim(1));  // [n*N, Dt]
    const auto e =
        model.language_model->output_weight().index_select(0, torch::tensor(words, torch::kInt64));  // [15, Dt]
    const auto logits =
        10.0 *
        torch::matmul(x, torch::nn::functional::normalize(e, torch::nn::functional::NormalizeFuncOptions().dim(1)).t());
    std::vector<std::int64_t> ki(kind_t.size()), ci(colour_t.size());
    for (std::size_t i = 0; i < ki.size(); ++i) ki[i] = kind_index(kind_t[i]), ci[i] = colour_index(colour_t[i]);
    const auto kt = torch::tensor(ki, torch::kInt64), ct = torch::tensor(ci, torch::kInt64);
    {
      torch::NoGradGuard ng;
      const auto is_obj = kt != kBg;
      const auto l = logits.detach();
      obj += is_obj.sum().item<std::int64_t>();
      const auto kind_pick = l.narrow(1, world::kColourCount, world::kShapeCount + 1).argmax(1) + world::kColourCount;
      auto colour_l = l.clone();
      colour_l.narrow(1, world::kColourCount, world::kShapeCount).fill_(-1e9);
      kind_ok += ((kind_pick == kt) & is_obj).sum().item<std::int64_t>();
      colour_ok += ((colour_l.argmax(1) == ct) & is_obj).sum().item<std::int64_t>();
    }
    return torch::nn::functional::cross_entropy(logits, kt) + torch::nn::functional::cross_entropy(logits, ct);
  }
  std::vector<std::int64_t> words;  // first tokens: 7 colours, 7 shapes, "background"
};

// The last vision layer's patch features [n, N, Dv] (the config selects layer -1, CLS dropped) with
// autograd (image_features runs without): stage 1 and stage 2 read the tower through it.
torch::Tensor patch_features(m::LlavaImpl& model, const torch::Tensor& pixel_values) {
  auto states = model.vision_tower->hidden_states(pixel_values);
  const auto& last = states.back();  // [n, 1 + N, Dv]
  return last.narrow(1, 1, last.size(1) - 1);
}

// Stage 1 on the dense targets of the world's own scenes, 2 * images_per_step per step: with `heads`
// (1a) the vision tower and the heads, else (1b) the tower, the projector and the candidate words'
// embeddings through `align`.
void pretrain_vision(m::LlavaImpl& model, DenseHeads* heads, const DenseAlignment& align, std::int64_t steps,
                     std::uint64_t seed_base, const DemoLlavaOptions& o, const m::ImageProcessorConfig& pc,
                     std::string& log_text) {
  std::vector<torch::Tensor> decay, no_decay;
  std::vector<torch::nn::Module*> parts = {model.vision_tower.get()};
  if (!heads) parts.push_back(model.multi_modal_projector.get());
  for (auto* part : parts)
    for (auto& p : part->named_parameters(true))
      (p.value().dim() >= 2 && !ends_with(p.key(), "position_embedding.weight") ? decay : no_decay)
          .push_back(p.value());
  if (heads)
    for (auto& p : heads->parameters()) decay.push_back(p);
  else
    no_decay.push_back(model.language_model->output_weight());
  auto opt = make_adamw(std::move(decay), std::move(no_decay), o.lr, o.weight_decay);
  const std::string stage = heads ? "vision" : "align";
  const int g = o.image_size / o.patch_size;
  const int per_step = 2 * o.images_per_step;
  StepLoop loop(heads ? "demo-llava: stage 1a (vision tower)" : "demo-llava: stage 1b (alignment)", steps, o.log_every);
  double acc_loss = 0;
  std::int64_t obj = 0, kind_ok = 0, colour_ok = 0;
  int acc_n = 0;
  while (loop.next()) {
    const std::int64_t step = loop.step();
    const double lr = warmup_cosine_lr(o.lr, step, steps, std::min<std::int64_t>(o.warmup, steps / 4));
    set_lr(*opt, lr);
    std::vector<torch::Tensor> px;
    std::vector<std::int64_t> kt, ct;
    for (int i = 0; i < per_step; ++i) {
      const auto seed = seed_base + static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(per_step) +
                        static_cast<std::uint64_t>(i);
      const world::Scene sc = world::make_scene(seed);
      px.push_back(m::pixel_values_from_bgr(sc.image, pc, m::ImageAspect::resize_crop));  // [1, 3, S, S]
      append_patch_targets(sc, g, kt, ct);
    }
    const auto patches = patch_features(model, torch::cat(px));  // [n, N, Dv]
    const auto loss = heads ? heads->loss(patches, kt, ct, obj, kind_ok, colour_ok)
                            : align.loss(model, model.multi_modal_projector(patches), kt, ct, obj, kind_ok, colour_ok);
    opt->zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model.parameters(), 1.0);
    opt->step();
    acc_loss += loss.item<double>();
    ++acc_n;
    if (loop.end_step()) {
      const double ka = obj ? static_cast<double>(kind_ok) / obj : 0,
                   ca = obj ? static_cast<double>(colour_ok) / obj : 0;
      log_text += fmt::format("{} {}\t{:.1f}\t{:.3g}\t{:.5f}\tpatches: kind {:.3f} colour {:.3f}\n", stage, step + 1,
                              loop.seconds(), lr, acc_loss / acc_n, ka, ca);
      log_info("demo-llava: {} step {} loss {:.4f} object patches right: kind {:.3f} colour {:.3f} ({:.0f} s)", stage,
               step + 1, acc_loss / acc_n, ka, ca, loop.seconds());
      acc_loss = 0;
      acc_n = 0;
      obj = kind_ok = colour_ok = 0;
    }
  }
}

}  // namespace

ChatExample make_chat_example(const text::LlamaTokenizer& tok, const text::ImageTokenConfig& itc,
                              const text::ChatTemplate& tmpl, const std::string& question, const std::string& answer,
                              int kind, std::int64_t image) {
  return make_example(tok, itc, tmpl, question, answer, kind, image);
}

void append_patch_targets(const world::Scene& sc, int g, std::vector<std::int64_t>& kind,
                          std::vector<std::int64_t>& colour) {
  const std::size_t base = kind.size(), n = static_cast<std::size_t>(g) * static_cast<std::size_t>(g);
  kind.resize(base + n, world::kShapeCount);
  colour.resize(base + n, world::kColourCount);
  std::vector<int> best(n, 255 / 4);
  for (const auto& o : sc.objects) {
    cv::Mat cov;  // CV_8UC1 [g, g]: the share of each patch the object covers, 0..255
    cv::resize(o.mask, cov, cv::Size(g, g), 0, 0, cv::INTER_AREA);
    for (int y = 0; y < g; ++y)
      for (int x = 0; x < g; ++x) {
        const std::size_t i = static_cast<std::size_t>(y) * static_cast<std::size_t>(g) + static_cast<std::size_t>(x);
        const int c = cov.at<std::uint8_t>(y, x);
        if (c <= best[i]) continue;
        best[i] = c;
        kind[base + i] = static_cast<std::int64_t>(o.shape);
        colour[base + i] = static_cast<std::int64_t>(o.colour);
      }
  }
}

at::Tensor answer_hidden(m::LlavaImpl& model, const at::Tensor& image_features, const std::vector<ChatExample>& ex,
                         std::int64_t pad_id, std::vector<std::int64_t>& targets, std::vector<std::size_t>& owner,
                         bool shared_prefix, bool keywords) {
  if (ex.empty()) throw RuntimeError("demo-llava: no conversations to score");
  // P: the tokens all conversations share (a prefix of each, ending before every answer's scored
  // positions); 0 when not shared.
  std::size_t P = 0;
  if (shared_prefix) {
    P = ex[0].ids.size();
    for (const auto& e : ex) {
      const auto mm = std::mismatch(ex[0].ids.begin(), ex[0].ids.begin() + static_cast<std::ptrdiff_t>(P),
                                    e.ids.begin(), e.ids.end());
      P = std::min(P, static_cast<std::size_t>(mm.first - ex[0].ids.begin()));
      P = std::min(P, e.answer_start - 1);  // position answer_start - 1 is scored: it must be in the remainder
      if (keywords && e.keyword_target >= 0) P = std::min(P, e.keyword_pos);
    }
  }
  std::size_t L = 0;  // the longest remainder
  for (const auto& e : ex) L = std::max(L, e.ids.size() - P);
  const auto Q = static_cast<std::int64_t>(ex.size());
  // Right-padded batch: the causal mask keeps the padding out of every scored position.
  auto ids = torch::full({Q, static_cast<std::int64_t>(L)}, pad_id, torch::kInt64);  // [Q, L]
  std::vector<std::int64_t> img_idx, pos;
  for (std::size_t b = 0; b < ex.size(); ++b) {
    const auto& e = ex[b];
    std::copy(e.ids.begin() + static_cast<std::ptrdiff_t>(P), e.ids.end(),
              ids[static_cast<std::int64_t>(b)].data_ptr<std::int64_t>());
    img_idx.push_back(e.image);
    for (std::size_t t = e.answer_start; t < e.ids.size(); ++t) {  // position t - 1 predicts token t
      pos.push_back(static_cast<std::int64_t>(b * L + (t - 1 - P)));
      targets.push_back(e.ids[t]);
      owner.push_back(b);
    }
  }
  for (std::size_t b = 0; keywords && b < ex.size(); ++b) {
    const auto& e = ex[b];
    if (e.keyword_target < 0) continue;
    if (e.keyword_pos >= e.ids.size()) throw RuntimeError("demo-llava: a keyword position lies after its conversation");
    pos.push_back(static_cast<std::int64_t>(b * L + (e.keyword_pos - P)));
    targets.push_back(e.keyword_target);
    owner.push_back(b);
  }
  auto& lm = *model.language_model;
  torch::Tensor h;  // [Q, L, Dt]
  if (P == 0) {
    h = lm.final_hidden(model.embed_inputs(ids, image_features.index_select(0, torch::tensor(img_idx))));
  } else {
    // The shared prefix once per image (its image tokens carry that image's features) ...
    const auto n_img = image_features.size(0);
    auto prefix = torch::tensor(std::vector<std::int64_t>(ex[0].ids.begin(), ex[0].ids.begin() + static_cast<std::ptrdiff_t>(P)))
                      .unsqueeze(0)
                      .expand({n_img, static_cast<std::int64_t>(P)});              // [n_img, P]
    models::KVCache pc = lm.make_cache(static_cast<std::int64_t>(P), n_img);
    lm.final_hidden(model.embed_inputs(prefix, image_features), &pc);
    // ... and each conversation's remainder after its image's keys and values.
    const auto sel = torch::tensor(img_idx);
    models::KVCache qc;
    for (std::size_t l = 0; l < pc.k.size(); ++l) {
      auto grow = [&](const torch::Tensor& t) {  // [n_img, Hkv, P, hd] -> [Q, Hkv, P + L, hd]
        auto s = t.index_select(0, sel);
        return torch::cat({s, torch::zeros({Q, s.size(1), static_cast<std::int64_t>(L), s.size(3)}, s.options())}, 2);
      };
      qc.k.push_back(grow(pc.k[l]));
      qc.v.push_back(grow(pc.v[l]));
    }
    qc.n_past = static_cast<std::int64_t>(P);
    h = lm.final_hidden(model.embed_inputs(ids, torch::Tensor()), &qc);
  }
  return h.reshape({-1, h.size(2)}).index_select(0, torch::tensor(pos));  // [n + keyword rows, Dt]
}

TrainReport train_demo_llava(const DemoLlavaOptions& o) {
  if (o.out_dir.empty()) throw UsageError("demo-llava: no output directory");
  if (o.steps < 1 || o.images_per_step < 1) throw UsageError("demo-llava: steps and images must be >= 1");
  if (o.heads < 1 || o.text_hidden % o.heads != 0 || (o.text_hidden / o.heads) % 2 != 0 ||
      o.vision_hidden % o.heads != 0)
    throw UsageError("demo-llava: the widths must be multiples of the heads (an even head size)");
  if (o.patch_size < 1 || o.image_size % o.patch_size != 0)
    throw UsageError("demo-llava: the image size must be a multiple of the patch size");
  if (o.reinit_text_layers && o.init_dir.empty())
    throw UsageError("demo-llava: --reinit-text-layers needs --init (the checkpoint whose other weights it keeps)");
  const text::LlamaTokenizer tok = text::LlamaTokenizer::load(o.tokenizer_dir);
  const text::TokenId image_id = tok.piece_to_id("<image>");
  if (image_id == tok.unk_id())
    throw ModelError((o.tokenizer_dir / "added_tokens.json").string() + ": the tokenizer has no <image> token");
  const std::int64_t vocab = (tok.vocab_size() + 63) / 64 * 64;  // as llava-hf pads the embedding matrix
  const std::int64_t pad_id = tok.pad_id() >= 0 ? tok.pad_id() : tok.eos_id();

  std::filesystem::create_directories(o.out_dir);
  const json cfg_json = demo_llava_config(o, vocab, image_id, pad_id), pre_json = demo_llava_preprocessor(o.image_size);
  const m::LlavaConfig cfg = m::parse_llava_config(cfg_json, "demo-llava config.json");
  const m::ImageProcessorConfig pc =
      m::parse_image_processor_config(m::ConfigReader(pre_json, "demo-llava preprocessor_config.json"));
  text::ImageTokenConfig itc;
  itc.image_token_id = image_id;
  itc.image_seq_length = cfg.tokens_per_image();
  const text::ChatTemplate tmpl;  // lli-chat's: LLaVA v1, no system prompt

  nn::TrainingScope training;
  m::Llava model(cfg);
  init_weights(*model, o.seed, o);
  if (!o.init_dir.empty()) {  // continue from an earlier run's weights (same sizes: every tensor by name)
    const auto ckpt = st::Checkpoint::open(o.init_dir);
    BindOptions bo;  // strict: every tensor by name and shape, converted to fp32 for training
    bo.dtype = torch::kFloat32;
    bo.source = ckpt.source();
    bind_weights(*model, load_tensors(ckpt), bo);
    log_info("demo-llava: weights from {}", o.init_dir.string());
    if (o.reinit_text_layers) {
      init_weights(*model, o.seed, o, true);
      log_info("demo-llava: the language model's layers initialised afresh");
    }
  }
  TrainReport rep;
  auto opt = make_trainable_adamw(
      *model,
      [](const std::string& name, const torch::Tensor& t) {
        return t.dim() >= 2 && !ends_with(name, "embed_tokens.weight") && !ends_with(name, "position_embedding.weight");
      },
      o.lr, o.weight_decay, rep.parameters);
  log_info("demo-llava: {} parameters (vision {}x{}, text {}x{}, {} image tokens), {} steps of {} scenes",
           rep.parameters, o.vision_layers, o.vision_hidden, o.text_layers, o.text_hidden, itc.image_seq_length,
           o.steps, o.images_per_step);

  const std::filesystem::path log_path = o.out_dir / "train-log.tsv";
  std::string log_text;
  const DenseAlignment align(tok);
  if (o.vision_steps > 0) {
    DenseHeads heads(o.vision_hidden);
    pretrain_vision(*model, &heads, align, o.vision_steps, kTrainSeedBase + (1ull << 32), o, pc, log_text);
  }
  if (o.align_steps > 0)
    pretrain_vision(*model, nullptr, align, o.align_steps, kTrainSeedBase + (2ull << 32), o, pc, log_text);
  const int g = o.image_size / o.patch_size;
  log_text += "step\tseconds\tlr\tloss\tcolour\tcount\tkind\tposition\texists\tcaption\n";
  StepLoop loop("training demo-llava", o.steps, o.log_every, o.max_minutes);
  double acc_loss = 0;
  int acc_n = 0;
  std::array<int, 6> q_seen{}, q_right{};
  std::array<int, 6> kw_seen{}, kw_right{};  // keyword targets right per kind (teacher-forced)
  while (loop.next()) {
    const std::int64_t step = loop.step();
    const double lr = warmup_cosine_lr(o.lr, step, o.steps, o.warmup);
    set_lr(*opt, lr);
    std::vector<torch::Tensor> px;
    std::vector<Example> ex;
    std::vector<std::int64_t> kt, ct;
    for (int i = 0; i < o.images_per_step; ++i) {
      const auto seed = kTrainSeedBase +
                        static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(o.images_per_step) +
                        static_cast<std::uint64_t>(i);
      const world::Scene sc = world::make_scene(seed, o.curriculum ? curriculum(step, o.steps) : world::SceneConfig{});
      px.push_back(m::pixel_values_from_bgr(sc.image, pc, m::ImageAspect::resize_crop));  // [1, 3, S, S]
      if (o.dense_weight > 0) append_patch_targets(sc, g, kt, ct);
      ex.push_back(make_example(tok, itc, tmpl, kDemoLlavaCaptionQuestion, world::caption(sc), kCaptionKind, i));
      for (const auto& qa : world::questions(sc, seed))
        ex.push_back(make_example(tok, itc, tmpl, qa.question, qa.answer, static_cast<int>(qa.kind), i));
      if (o.present_questions && !sc.objects.empty()) {  // see DemoLlavaOptions::present_questions
        const world::Shape sh = sc.objects[(seed * 0x9E3779B97F4A7C15ull >> 32) % sc.objects.size()].shape;
        for (const auto& qa : {world::exists_question(sc, sh), world::count_question(sc, sh)})
          ex.push_back(make_example(tok, itc, tmpl, qa.question, qa.answer, static_cast<int>(qa.kind), i));
      }
    }
    const auto patches = patch_features(*model, torch::cat(px));  // [n_img, N, Dv]
    const auto feats = model->multi_modal_projector(patches);     // [n_img, N, Dt]
    std::vector<std::int64_t> tgt;
    std::vector<std::size_t> owner;  // example of each scored position
    const bool kw = o.keyword_weight > 0;
    std::int64_t n_kw = 0;  // the keyword rows after the answers' (answer_hidden)
    for (const auto& e : ex) n_kw += kw && e.keyword_target >= 0;
    const auto hs_all = answer_hidden(*model, feats, ex, pad_id, tgt, owner, true, kw);  // [n + n_kw, Dt]
    const auto n_ans = hs_all.size(0) - n_kw;
    const auto logits_all = torch::matmul(hs_all, model->language_model->output_weight().t());  // [n + n_kw, V]
    const auto target_all = torch::tensor(tgt, torch::kInt64);
    const auto logits = logits_all.narrow(0, 0, n_ans), target = target_all.narrow(0, 0, n_ans);  // the answers
    auto loss = torch::nn::functional::cross_entropy(logits, target);
    if (n_kw > 0) {
      const auto kl = logits_all.narrow(0, n_ans, n_kw), kt = target_all.narrow(0, n_ans, n_kw);
      loss = loss + o.keyword_weight * torch::nn::functional::cross_entropy(kl, kt);
      torch::NoGradGuard ng;
      const auto r = (kl.detach().argmax(1) == kt).contiguous();
      const auto* rp = r.data_ptr<bool>();
      for (std::int64_t k = 0; k < n_kw; ++k) {
        const auto q = static_cast<std::size_t>(ex[owner[static_cast<std::size_t>(n_ans + k)]].kind);
        ++kw_seen[q];
        kw_right[q] += rp[k];
      }
    }
    if (o.dense_weight > 0) {
      std::int64_t obj = 0, kind_ok = 0, colour_ok = 0;
      loss = loss + o.dense_weight * align.loss(*model, feats, kt, ct, obj, kind_ok, colour_ok);
    }
    opt->zero_grad();
    loss.backward();
    if (step == 0) {  // every part of the model learns: the gradient reaches the vision tower
      auto norm = [](torch::nn::Module& mod) {
        double sq = 0;
        for (const auto& p : mod.parameters())
          if (p.grad().defined()) sq += p.grad().pow(2).sum().item<double>();
        return std::sqrt(sq);
      };
      log_info("demo-llava: first gradient norms: vision tower {:.3g}, projector {:.3g}, language model {:.3g}",
               norm(*model->vision_tower), norm(*model->multi_modal_projector), norm(*model->language_model));
    }
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    opt->step();

    acc_loss += loss.item<double>();
    ++acc_n;
    {  // teacher-forced exact answers per kind
      const auto right = (logits.detach().argmax(1) == target).contiguous();
      const auto* r = right.data_ptr<bool>();
      std::vector<char> ok(ex.size(), 1);
      for (std::size_t k = 0; k < static_cast<std::size_t>(n_ans); ++k)
        if (!r[k]) ok[owner[k]] = 0;
      for (std::size_t b = 0; b < ex.size(); ++b) {
        ++q_seen[static_cast<std::size_t>(ex[b].kind)];
        q_right[static_cast<std::size_t>(ex[b].kind)] += ok[b];
      }
    }
    if (loop.end_step()) {
      rep.final_loss = acc_loss / acc_n;
      std::array<double, 6> a{};
      for (std::size_t k = 0; k < 6; ++k) a[k] = q_seen[k] ? static_cast<double>(q_right[k]) / q_seen[k] : 0.0;
      log_text += fmt::format("{}\t{:.1f}\t{:.3g}\t{:.5f}\t{:.3f}\t{:.3f}\t{:.3f}\t{:.3f}\t{:.3f}\t{:.3f}\n", step + 1,
                              loop.seconds(), lr, rep.final_loss, a[0], a[1], a[2], a[3], a[4], a[5]);
      std::string kw_text;  // the keyword targets right per kind, when trained
      if (kw_seen[0] + kw_seen[1] + kw_seen[2] + kw_seen[3] + kw_seen[4] > 0)
        kw_text = fmt::format("; at the keyword: colour {:.2f} count {:.2f} kind {:.2f} position {:.2f} exists {:.2f}",
                              static_cast<double>(kw_right[0]) / std::max(1, kw_seen[0]),
                              static_cast<double>(kw_right[1]) / std::max(1, kw_seen[1]),
                              static_cast<double>(kw_right[2]) / std::max(1, kw_seen[2]),
                              static_cast<double>(kw_right[3]) / std::max(1, kw_seen[3]),
                              static_cast<double>(kw_right[4]) / std::max(1, kw_seen[4]));
      log_info(
          "demo-llava: step {} loss {:.4f} answers right: colour {:.2f} count {:.2f} kind {:.2f} position {:.2f} "
          "exists {:.2f} caption {:.2f}{} ({:.0f} s)",
          step + 1, rep.final_loss, a[0], a[1], a[2], a[3], a[4], a[5], kw_text, loop.seconds());
      write_file_atomic(log_path.string(), log_text);
      acc_loss = 0;
      acc_n = 0;
      q_seen = {};
      q_right = {};
      kw_seen = {};
      kw_right = {};
    }
  }
  rep.steps = loop.steps_run();
  rep.seconds = loop.seconds();

  save_hf_checkpoint(o.out_dir, *model, o.fp16, "demo-llava", rep.steps, o.seed, cfg_json, pre_json);
  for (const char* f : kTokenizerFiles) {
    const auto src = o.tokenizer_dir / f;
    if (std::filesystem::exists(src)) write_file_atomic((o.out_dir / f).string(), read_file(src.string()));
  }
  log_info("demo-llava: {} steps in {:.0f} s, written to {}", rep.steps, rep.seconds, o.out_dir.string());
  return rep;
}

LlavaEvalResult evaluate_demo_llava(const std::filesystem::path& model_dir, int per_kind, std::uint64_t seed0,
                                    DTypeChoice dtype) {
  pipelines::ChatOptions co;
  co.dtype = dtype;
  co.weights = pipelines::WeightsChoice::mmap;
  auto chat = pipelines::ChatSession::load(model_dir, co);
  SamplerConfig greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 16;
  LlavaEvalResult r;
  auto full = [&] {
    for (const auto& k : r.by_kind)
      if (k.questions < per_kind) return false;
    return true;
  };
  for (std::uint64_t seed = seed0; !full() && seed < seed0 + 1000000; ++seed) {
    check_interrupted();
    const world::Scene sc = world::make_scene(seed);
    bool image_set = false;
    for (const auto& qa : world::questions(sc, seed)) {
      auto& k = r.by_kind[static_cast<std::size_t>(qa.kind)];
      if (k.questions >= per_kind) continue;
      if (!image_set) {
        chat.set_image(sc.image);
        image_set = true;
        ++r.scenes;
      }
      chat.reset();
      ++k.questions;
      LlavaEvalAnswer a{seed, qa.kind, qa.question, qa.answer, chat.ask(qa.question, greedy).text};
      k.correct += a.answer == a.expected ? 1 : 0;
      r.answers.push_back(std::move(a));
    }
  }
  return r;
}

}  // namespace lli::train
