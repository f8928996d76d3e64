// lli-train-demo: trains lli's demo models on the shapes world (issue 13) and evaluates them.
// Argument parsing only: the training loops and the evaluation live in lib/train/.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

#include "common/cli.h"
#include "lli/fs.h"
#include "lli/image.h"
#include "lli/log.h"
#include "train/demo_gligen.h"
#include "train/demo_lama.h"
#include "train/demo_llava.h"
#include "train/demo_owl.h"
#include "train/demo_sam.h"
#include "world/shapes_world.h"

namespace {

using namespace lli;
using namespace lli::cli;

const char* kExamples = R"(
Examples:
  lli-train-demo sam --out models/demo-sam                 # the shipped demo-sam (fixed seed and steps)
  lli-train-demo sam --out /tmp/sam --steps 200 --json     # a short trial
  lli-train-demo eval-sam models/demo-sam --scenes 100     # mean IoU on held-out scenes
  lli-train-demo lama --out models/demo-lama               # the shipped demo-lama
  lli-train-demo eval-lama models/demo-lama --scenes 100   # hole PSNR vs the true background, and Telea's
  lli-train-demo llava --out models/demo-llava --tokenizer tests/fixtures/llava-tiny-a   # the shipped demo-llava
  lli-train-demo eval-llava models/demo-llava --questions 200   # exact answers per question kind
  lli-train-demo gligen --out models/demo-gligen --tokenizer tests/fixtures/gligen-gen-tiny-a/tokenizer   # the shipped demo-gligen
  lli-train-demo eval-gligen models/demo-gligen --sam models/demo-sam --layouts 100   # boxes drawn as asked, judged by demo-sam
  lli-train-demo probe-gligen models/demo-gligen --scenes 64   # epsilon MSE with true / mirrored / no boxes
  lli-train-demo owl --out models/demo-owl --tokenizer tests/fixtures/owlv2-tiny-a \
      --init-vision models/demo-llava --init-text models/demo-gligen/text_encoder   # the shipped demo-owl
  lli-train-demo eval-owl models/demo-owl --scenes 200    # named objects found (box IoU >= 0.5)
  lli-train-demo scene --seed 7 -o scene.png --mask-dir masks/  # one scene, its objects as JSON
scripts/train-demo-models.sh runs the shipped configurations. Training is fp32 on the CPU cores
(--threads). The models only know the synthetic shapes world.
Exit codes: 0 ok, 2 usage, 3 bad input, 4 bad checkpoint, 5 runtime, 130 interrupted.)";

// The --json result of a training run (the evaluation adds "eval").
nlohmann::json report_json(const char* model, const std::string& out, const train::TrainReport& rep) {
  return {{"model", model}, {"out", out}, {"steps", rep.steps}, {"seconds", rep.seconds},
          {"final_loss", rep.final_loss}, {"parameters", rep.parameters}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lli-train-demo: train and evaluate lli's demo models on the synthetic shapes world"};
  app.footer(kExamples);
  app.require_subcommand(1);
  CommonOptions o;
  FlagSet which;
  which.model = which.image = which.output = which.session = which.batch = which.seed = false;  // --device, --threads
  add_common_flags(app, o, which);

  train::DemoSamOptions so;
  std::string out;
  std::uint64_t seed = 1;
  int eval_scenes = 100;
  auto* sam = app.add_subcommand("sam", "Train demo-sam (a small SamModel) and evaluate it")->fallthrough();
  sam->add_option("--out", out, "Output model directory")->required();
  sam->add_option("--steps", so.steps, "Optimizer steps")->capture_default_str();
  sam->add_option("--seed", seed, "Seed of the initialisation and the prompt sampling")->capture_default_str();
  sam->add_option("--images", so.images_per_step, "Images per step")->capture_default_str();
  sam->add_option("--prompts", so.prompts_per_image, "Prompts per image")->capture_default_str();
  sam->add_option("--lr", so.lr, "Peak learning rate (AdamW)")->capture_default_str();
  sam->add_option("--minutes", so.max_minutes, "Stop after this many minutes of training (0 = no limit)");
  sam->add_option("--eval-scenes", eval_scenes, "Held-out scenes evaluated after training (0 = none)")
      ->capture_default_str();

  std::string eval_dir;
  auto* eval = app.add_subcommand("eval-sam", "Mean IoU of a SAM checkpoint on held-out shapes-world scenes")->fallthrough();
  eval->add_option("MODEL_DIR", eval_dir, "SAM checkpoint directory")->required();
  eval->add_option("--scenes", eval_scenes, "Held-out scenes (seeds 1..N)")->capture_default_str();

  train::DemoLamaOptions lo;
  std::string lama_out;
  auto* lama = app.add_subcommand("lama", "Train demo-lama (a small LaMa generator) and evaluate it")->fallthrough();
  lama->add_option("--out", lama_out, "Output model directory")->required();
  lama->add_option("--steps", lo.steps, "Optimizer steps")->capture_default_str();
  lama->add_option("--seed", lo.seed, "Seed of the initialisation and the sampling")->capture_default_str();
  lama->add_option("--images", lo.images_per_step, "Images per step")->capture_default_str();
  lama->add_option("--lr", lo.lr, "Peak learning rate (AdamW)")->capture_default_str();
  lama->add_option("--known-weight", lo.known_weight, "Weight of the L1 outside the hole")->capture_default_str();
  lama->add_option("--noise-share", lo.noise_share, "Share of the training scenes given the noise background (the rest drawn as the world does)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  lama->add_option("--ngf", lo.ngf, "Generator width (config.yaml generator.ngf)")->capture_default_str();
  lama->add_option("--blocks", lo.n_blocks, "FFC residual blocks (generator.n_blocks)")->capture_default_str();
  lama->add_option("--down", lo.n_downsampling, "Downsamplings (generator.n_downsampling)")->capture_default_str();
  lama->add_option("--minutes", lo.max_minutes, "Stop after this many minutes of training (0 = no limit)");
  lama->add_option("--eval-scenes", eval_scenes, "Held-out scenes evaluated after training (0 = none)")
      ->capture_default_str();
  auto* eval_lama =
      app.add_subcommand("eval-lama", "Hole PSNR of a LaMa checkpoint (and of Telea) on held-out shapes-world scenes")
          ->fallthrough();
  eval_lama->add_option("MODEL_DIR", eval_dir, "LaMa checkpoint directory")->required();
  eval_lama->add_option("--scenes", eval_scenes, "Held-out scenes (seeds 1..N)")->capture_default_str();

  train::DemoLlavaOptions vo;
  std::string llava_out, tokenizer_dir;
  int eval_questions = 200;
  auto* llava = app.add_subcommand("llava", "Train demo-llava (a small LLaVA-1.5) and evaluate it")->fallthrough();
  llava->add_option("--out", llava_out, "Output model directory")->required();
  llava->add_option("--tokenizer", tokenizer_dir, "Directory with the LLaMA tokenizer.model (+ its JSON files) to ship")
      ->required();
  llava->add_option("--steps", vo.steps, "Optimizer steps")->capture_default_str();
  llava->add_option("--seed", vo.seed, "Seed of the initialisation")->capture_default_str();
  llava->add_option("--images", vo.images_per_step, "Scenes per step (all their questions)")->capture_default_str();
  llava->add_option("--lr", vo.lr, "Peak learning rate (AdamW)")->capture_default_str();
  llava->add_option("--image-size", vo.image_size, "Vision tower input side")->capture_default_str();
  llava->add_option("--patch", vo.patch_size, "Vision patch size")->capture_default_str();
  llava->add_option("--vision-width", vo.vision_hidden, "Vision hidden size")->capture_default_str();
  llava->add_option("--vision-layers", vo.vision_layers, "Vision layers")->capture_default_str();
  llava->add_option("--text-width", vo.text_hidden, "LLaMA hidden size")->capture_default_str();
  llava->add_option("--text-layers", vo.text_layers, "LLaMA layers")->capture_default_str();
  llava->add_option("--heads", vo.heads, "Attention heads (both towers)")->capture_default_str();
  llava->add_option("--vision-steps", vo.vision_steps, "Stage 1a: steps of the vision tower's per-patch classification")
      ->capture_default_str();
  llava->add_option("--align-steps", vo.align_steps, "Stage 1b: steps of the per-patch alignment to the words")
      ->capture_default_str();
  llava->add_option("--init", vo.init_dir, "Start from this demo-llava checkpoint's weights (same sizes)");
  llava->add_option("--dense-weight", vo.dense_weight, "Weight of the per-patch loss kept in the LLaVA stage (0 = off)")
      ->capture_default_str();
  llava->add_option("--curriculum", vo.curriculum, "Large single objects first (true/false)")->capture_default_str();
  llava->add_option("--present-questions", vo.present_questions,
                    "Also ask about a shape each scene has (\"Is there a ...?\", \"How many ...?\"; true/false)")
      ->capture_default_str();
  llava->add_option("--keyword-weight", vo.keyword_weight,
                    "Weight of the keyword loss in the LLaVA stage: the question's colour or shape word predicts the "
                    "answer's first word (0 = off)")
      ->capture_default_str();
  llava->add_option("--reinit-text-layers", vo.reinit_text_layers,
                    "With --init: the language model's layers (not its word embeddings) initialised afresh")
      ->capture_default_str();
  llava->add_option("--minutes", vo.max_minutes, "Stop after this many minutes of training (0 = no limit)");
  llava->add_option("--eval-questions", eval_questions, "Held-out questions per kind evaluated after training (0 = none)")
      ->capture_default_str();
  auto* eval_llava =
      app.add_subcommand("eval-llava", "Exact-answer accuracy of a LLaVA checkpoint on held-out shapes-world questions")
          ->fallthrough();
  eval_llava->add_option("MODEL_DIR", eval_dir, "LLaVA checkpoint directory")->required();
  eval_llava->add_option("--questions", eval_questions, "Held-out questions per kind (scenes from seed 1)")
      ->capture_default_str();
  std::string llava_answers;
  for (auto* c : {llava, eval_llava})
    c->add_option("--answers", llava_answers, "Also write every evaluated question and answer here (TSV)");

  train::DemoGligenOptions go;
  train::GligenEvalOptions ge;
  std::string gligen_out, gligen_images;
  auto* gligen = app.add_subcommand("gligen", "Train demo-gligen (a small SD + GLIGEN pipeline) and evaluate it")->fallthrough();
  gligen->add_option("--out", gligen_out, "Output pipeline directory")->required();
  gligen->add_option("--tokenizer", go.tokenizer_dir, "Directory with the CLIP tokenizer (vocab.json, merges.txt, ...) to ship")
      ->required();
  gligen->add_option("--size", go.size, "Image side in pixels")->capture_default_str();
  gligen->add_option("--vae-steps", go.vae_steps, "Stage 1: VAE steps")->capture_default_str();
  gligen->add_option("--steps", go.steps, "Stage 2: UNet + text encoder steps")->capture_default_str();
  gligen->add_option("--seed", go.seed, "Seed of the initialisation and the sampling")->capture_default_str();
  gligen->add_option("--images", go.images_per_step, "Images per step")->capture_default_str();
  gligen->add_option("--lr", go.lr, "Stage 2 peak learning rate (AdamW)")->capture_default_str();
  gligen->add_option("--vae-lr", go.vae_lr, "Stage 1 peak learning rate (AdamW)")->capture_default_str();
  gligen->add_option("--unet-channels", go.unet_channels, "UNet block_out_channels")->capture_default_str();
  gligen->add_option("--unet-layers", go.unet_layers, "UNet layers_per_block")->capture_default_str();
  gligen->add_option("--attention-from", go.attention_from, "First UNet level with (cross-)attention")->capture_default_str();
  gligen->add_option("--vae-channels", go.vae_channels, "VAE block_out_channels")->capture_default_str();
  gligen->add_option("--text-width", go.text_hidden, "Text encoder hidden size")->capture_default_str();
  gligen->add_option("--ema", go.ema, "EMA decay of the saved weights")->capture_default_str();
  gligen->add_option("--caption-drop", go.caption_drop, "Share of images trained without their caption")->capture_default_str();
  gligen->add_option("--position-aux", go.position_aux,
                     "Weight of the auxiliary loss that teaches the UNet's features their position (0 = off)")
      ->capture_default_str();
  gligen->add_option("--attention-aux", go.attention_aux,
                     "Weight of the auxiliary loss that points each fuser's attention at the box a token lies in (0 = off)")
      ->capture_default_str();
  gligen->add_option("--attention-aux-features", go.attention_aux_features,
                     "Share of the attention loss whose gradient reaches the UNet's features (0..1)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  gligen->add_option("--max-objects", go.max_objects, "At most this many objects per training scene of the UNet stage")
      ->capture_default_str();
  gligen->add_option("--t-min", go.t_min, "Train on the timesteps t_min..999 only")->capture_default_str()->check(CLI::Range(0, 999));
  gligen->add_option("--min-snr", go.min_snr, "Min-SNR-gamma loss weighting (0 = the plain epsilon MSE)")->capture_default_str();
  gligen->add_option("--gate-init", go.gate_init, "The GLIGEN fuser's gates at the start (GLIGEN: 0)")->capture_default_str();
  gligen->add_option("--v-prediction", go.v_prediction,
                     "Train the UNet to predict v instead of epsilon (scheduler prediction_type v_prediction; true/false)")
      ->capture_default_str();
  gligen->add_option("--init-vae", go.init_vae, "Take the VAE of this demo-gligen pipeline (stage 1 skipped)");
  gligen->add_option("--minutes", go.max_minutes, "Stop stage 2 after this many minutes (0 = no limit)");
  auto* eval_gligen = app.add_subcommand("eval-gligen", "Boxes drawn as asked by a GLIGEN pipeline, judged by a SAM checkpoint")
                          ->fallthrough();
  eval_gligen->add_option("MODEL_DIR", eval_dir, "GLIGEN pipeline directory")->required();
  for (auto* c : {gligen, eval_gligen}) {
    c->add_option("--sam", ge.sam_dir, "SAM checkpoint that judges the images (demo-sam)");
    c->add_option("--layouts", ge.layouts, "Held-out layouts (scenes from seed 1; 0 = none)")->capture_default_str();
    c->add_option("--gen-steps", ge.steps, "Diffusion steps per image")->capture_default_str();
    c->add_option("--guidance", ge.guidance, "Classifier-free guidance")->capture_default_str();
    c->add_option("--beta", ge.beta, "GLIGEN scheduled sampling beta")->capture_default_str();
    c->add_option("--images-dir", gligen_images, "Write the generated images there");
  }

  train::DemoOwlOptions wo;
  std::string owl_out;
  auto* owl = app.add_subcommand("owl", "Train demo-owl (a small OWLv2 detector) and evaluate it")->fallthrough();
  owl->add_option("--out", owl_out, "Output model directory")->required();
  owl->add_option("--tokenizer", wo.tokenizer_dir, "Directory with the CLIP tokenizer of OWL (pad token \"!\") to ship")
      ->required();
  owl->add_option("--init-vision", wo.init_vision, "Start the vision tower from this llava-hf checkpoint's (demo-llava)");
  owl->add_option("--init-text", wo.init_text, "Start the text tower from this CLIPTextModel's (demo-gligen/text_encoder)");
  owl->add_option("--steps", wo.steps, "Optimizer steps")->capture_default_str();
  owl->add_option("--seed", wo.seed, "Seed of the initialisation and the query sampling")->capture_default_str();
  owl->add_option("--images", wo.images_per_step, "Scenes per step")->capture_default_str();
  owl->add_option("--lr", wo.lr, "Peak learning rate (AdamW)")->capture_default_str();
  owl->add_option("--image-size", wo.image_size, "Vision tower input side")->capture_default_str();
  owl->add_option("--patch", wo.patch_size, "Vision patch size")->capture_default_str();
  owl->add_option("--vision-width", wo.vision_hidden, "Vision hidden size")->capture_default_str();
  owl->add_option("--vision-layers", wo.vision_layers, "Vision layers")->capture_default_str();
  owl->add_option("--text-width", wo.text_hidden, "Text hidden size (= the projection)")->capture_default_str();
  owl->add_option("--text-layers", wo.text_layers, "Text layers")->capture_default_str();
  owl->add_option("--quality-targets", wo.quality_targets,
                  "Quality focal loss: a positive patch's class target is its box's IoU (true/false)")
      ->capture_default_str();
  owl->add_option("--minutes", wo.max_minutes, "Stop after this many minutes of training (0 = no limit)");
  owl->add_option("--eval-scenes", eval_scenes, "Held-out scenes evaluated after training (0 = none)")->capture_default_str();
  auto* eval_owl =
      app.add_subcommand("eval-owl", "Named objects found by an OWL checkpoint on held-out shapes-world scenes")->fallthrough();
  eval_owl->add_option("MODEL_DIR", eval_dir, "OWLv2 / OWL-ViT checkpoint directory")->required();
  eval_owl->add_option("--scenes", eval_scenes, "Held-out scenes (seeds 1..N)")->capture_default_str();

  std::string probe_dir;
  int probe_scenes = 64;
  std::vector<int> probe_t = {100, 300, 500, 700, 900};
  auto* probe_gligen = app.add_subcommand("probe-gligen", "Whether a GLIGEN pipeline uses its boxes: the UNet's epsilon MSE on "
                                                          "held-out scenes with true, mirrored and no boxes")
                           ->fallthrough();
  probe_gligen->add_option("MODEL_DIR", probe_dir, "demo-gligen pipeline directory")->required();
  probe_gligen->add_option("--scenes", probe_scenes, "Held-out scenes (seeds 1..N)")->capture_default_str();
  probe_gligen->add_option("--timesteps", probe_t, "Training timesteps probed")->capture_default_str();

  std::uint64_t scene_seed = 1;
  std::string scene_out, mask_dir;
  auto* scene = app.add_subcommand("scene", "Write one shapes-world scene (image, object masks) and print its ground truth")
                    ->fallthrough();
  scene->add_option("--seed", scene_seed, "Scene seed (the held-out scenes are 1, 2, ...)")->capture_default_str();
  scene->add_option("-o,--output", scene_out, "Image to write (PNG)")->required();
  scene->add_option("--mask-dir", mask_dir, "Also write each object's visible mask as <dir>/object-<i>.png");

  return run_tool("lli-train-demo", app, argc, argv, o, [&] {
    if (scene->parsed()) {
      const world::Scene sc = world::make_scene(scene_seed);
      write_image(scene_out, sc.image);
      nlohmann::json objs = nlohmann::json::array();
      for (std::size_t i = 0; i < sc.objects.size(); ++i) {
        const auto& ob = sc.objects[i];
        nlohmann::json jo = {{"name", ob.name()},
                             {"box", {ob.box.x, ob.box.y, ob.box.x + ob.box.width, ob.box.y + ob.box.height}},
                             {"centre", {ob.centre.x, ob.centre.y}}};
        if (!mask_dir.empty()) {
          const std::string mp = mask_dir + "/object-" + std::to_string(i) + ".png";
          write_mask(mp, ob.mask);
          jo["mask"] = mp;
        }
        objs.push_back(jo);
      }
      const nlohmann::json j = {{"seed", scene_seed},
                                {"image", scene_out},
                                {"width", sc.image.cols},
                                {"height", sc.image.rows},
                                {"background", world::background_name(sc.bg)},
                                {"caption", world::caption(sc)},
                                {"objects", objs}};
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    apply_runtime_options(o, /*uses_torch=*/true);
    nlohmann::json j;
    std::string dir = eval_dir;
    if (gligen->parsed() || eval_gligen->parsed()) {
      if (gligen->parsed()) {
        go.out_dir = gligen_out;
        const auto rep = train::train_demo_gligen(go);
        j = report_json("demo-gligen", gligen_out, rep);
        dir = gligen_out;
      }
      if (ge.layouts > 0 && !ge.sam_dir.empty()) {
        ge.model_dir = dir;
        ge.images_dir = gligen_images;
        ge.dtype = parse_dtype(o.dtype);
        const auto r = train::evaluate_demo_gligen(ge);
        log_info("lli-train-demo: {}/{} layouts with every box right; boxes: {} found, {} colour, {} kind, {} all of "
                 "{} ({:.0f} s)",
                 r.layouts_ok, r.layouts, r.boxes_found, r.colour_ok, r.kind_ok, r.boxes_ok, r.boxes, r.seconds);
        j["eval"] = {{"layouts", r.layouts}, {"layouts_ok", r.layouts_ok}, {"boxes", r.boxes},
                     {"boxes_found", r.boxes_found}, {"colour_ok", r.colour_ok}, {"kind_ok", r.kind_ok},
                     {"boxes_ok", r.boxes_ok}, {"seconds", r.seconds}};
      }
      if (o.json) std::printf("%s\n", j.dump().c_str());
      return;
    }
    if (probe_gligen->parsed()) {
      const auto r = train::probe_gligen_boxes(probe_dir, probe_scenes, probe_t);
      nlohmann::json rows = nlohmann::json::array();
      for (std::size_t i = 0; i < r.timesteps.size(); ++i) {
        log_info("lli-train-demo: t {:4d}: epsilon MSE with the true boxes {:.5f}, mirrored {:.5f}, none {:.5f}; "
                 "prediction moved by mirroring {:.5f}, by no grounding {:.5f}",
                 r.timesteps[i], r.mse_true[i], r.mse_mirrored[i], r.mse_none[i], r.moved_mirrored[i], r.moved_none[i]);
        rows.push_back({{"t", r.timesteps[i]}, {"mse_true", r.mse_true[i]}, {"mse_mirrored", r.mse_mirrored[i]},
                        {"mse_none", r.mse_none[i]}, {"moved_mirrored", r.moved_mirrored[i]}, {"moved_none", r.moved_none[i]}});
      }
      log_info("lli-train-demo: grounding tokens moved by mirroring {:.5f}, by no grounding {:.5f}", r.tokens_moved_mirrored,
               r.tokens_moved_none);
      if (o.json) std::printf("%s\n", nlohmann::json({{"scenes", r.scenes}, {"timesteps", rows}, {"tokens_moved_mirrored", r.tokens_moved_mirrored}, {"tokens_moved_none", r.tokens_moved_none}}).dump().c_str());
      return;
    }
    if (owl->parsed() || eval_owl->parsed()) {
      if (owl->parsed()) {
        wo.out_dir = owl_out;
        const auto rep = train::train_demo_owl(wo);
        j = report_json("demo-owl", owl_out, rep);
        dir = owl_out;
      }
      if (eval_scenes > 0) {
        const auto r = train::evaluate_demo_owl(dir, eval_scenes, 1, parse_dtype(o.dtype));
        log_info("lli-train-demo: {}/{} names found (box IoU >= 0.5; {} also scored above 0.1), {} best boxes centred on "
                 "the object, mean IoU {:.3f}; {}/{} absent names scored <= 0.1 ({:.0f} s)",
                 r.found, r.objects, r.above_threshold, r.located, r.mean_iou, r.absent_rejected, r.absent, r.seconds);
        j["eval"] = {{"scenes", eval_scenes}, {"names", r.objects}, {"found", r.found},
                     {"found_above_threshold", r.above_threshold}, {"located", r.located}, {"mean_iou", r.mean_iou}, {"absent", r.absent},
                     {"absent_rejected", r.absent_rejected}, {"seconds", r.seconds}};
      }
      if (o.json) std::printf("%s\n", j.dump().c_str());
      return;
    }
    if (llava->parsed() || eval_llava->parsed()) {
      if (llava->parsed()) {
        vo.out_dir = llava_out;
        vo.tokenizer_dir = tokenizer_dir;
        const auto rep = train::train_demo_llava(vo);
        j = report_json("demo-llava", llava_out, rep);
        dir = llava_out;
      }
      if (eval_questions > 0) {
        const auto r = train::evaluate_demo_llava(dir, eval_questions, 1, parse_dtype(o.dtype));
        nlohmann::json kinds = nlohmann::json::object();
        for (int k = 0; k < 5; ++k) {
          const auto& g = r.by_kind[static_cast<std::size_t>(k)];
          const char* name = world::question_kind_name(static_cast<world::QuestionKind>(k));
          log_info("lli-train-demo: {:8s} {}/{} exact ({:.1f} %)", name, g.correct, g.questions, 100.0 * g.accuracy());
          kinds[name] = {{"questions", g.questions}, {"correct", g.correct}, {"accuracy", g.accuracy()}};
        }
        j["eval"] = {{"scenes", r.scenes}, {"kinds", kinds}};
        if (!llava_answers.empty()) {
          std::string tsv = "seed\tkind\tquestion\texpected\tanswer\n";
          auto cell = [](std::string t) {  // one line, no tabs
            for (auto& c : t)
              if (c == '\t' || c == '\n' || c == '\r') c = ' ';
            return t;
          };
          for (const auto& a : r.answers)
            tsv += fmt::format("{}\t{}\t{}\t{}\t{}\n", a.seed, world::question_kind_name(a.kind), cell(a.question),
                               cell(a.expected), cell(a.answer));
          write_file_atomic(llava_answers, tsv);
        }
      }
      if (o.json) std::printf("%s\n", j.dump().c_str());
      return;
    }
    if (lama->parsed() || eval_lama->parsed()) {
      if (lama->parsed()) {
        lo.out_dir = lama_out;
        const auto rep = train::train_demo_lama(lo);
        j = report_json("demo-lama", lama_out, rep);
        dir = lama_out;
      }
      if (eval_scenes > 0) {
        const auto r = train::evaluate_demo_lama(dir, eval_scenes, 1, parse_dtype(o.dtype));
        nlohmann::json groups = nlohmann::json::object();
        for (int b = 0; b < world::kBackgroundCount; ++b) {
          const auto& g = r.by_background[static_cast<std::size_t>(b)];
          const char* name = world::background_name(static_cast<world::Background>(b));
          log_info("lli-train-demo: {:9s} {:3d} objects: hole PSNR LaMa {:.2f} dB, Telea {:.2f} dB, LaMa better on {}",
                   name, g.objects, g.psnr_lama, g.psnr_telea, g.lama_better);
          groups[name] = {{"objects", g.objects}, {"psnr_lama", g.psnr_lama}, {"psnr_telea", g.psnr_telea},
                          {"lama_better", g.lama_better}};
        }
        j["eval"] = {{"scenes", eval_scenes}, {"skipped", r.skipped}, {"backgrounds", groups}};
      }
      if (o.json) std::printf("%s\n", j.dump().c_str());
      return;
    }
    if (sam->parsed()) {
      so.out_dir = out;
      so.seed = seed;
      const auto rep = train::train_demo_sam(so);
      j = report_json("demo-sam", out, rep);
      dir = out;
    }
    if (eval_scenes > 0) {
      const auto r = train::evaluate_demo_sam(dir, eval_scenes);
      log_info("lli-train-demo: {} objects of {} held-out scenes: mean IoU point {:.3f}, box {:.3f}, stroke {:.3f} "
               "(the true mask at the decoder's resolution: {:.3f})",
               r.objects, eval_scenes, r.iou_point, r.iou_box, r.iou_stroke, r.iou_oracle);
      j["eval"] = {{"scenes", eval_scenes}, {"objects", r.objects}, {"iou_point", r.iou_point},
                   {"iou_box", r.iou_box}, {"iou_stroke", r.iou_stroke}, {"iou_oracle", r.iou_oracle}};
    }
    if (o.json) std::printf("%s\n", j.dump().c_str());
  });
}
