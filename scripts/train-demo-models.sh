#!/usr/bin/env bash
# Trains lli's demo models on the synthetic shapes world (issue 13) with the shipped settings and
# writes them to models/<name>/ (config, weights; the loss log moved to docs/train-logs/<name>.tsv).
# Not run by CI or the tests; the tests load the committed weights.
#
#   scripts/train-demo-models.sh            every demo model
#   scripts/train-demo-models.sh sam        one of them (sam, lama, llava, gligen, owl)
#
# owl starts its towers from the shipped demo-llava (vision) and demo-gligen (text), as OWL-ViT
# starts from CLIP: train those first when retraining everything (the default order does).
#
# Each run is reproducible: fixed seeds and step counts (the data and the learning-rate schedule
# depend on them only) and a fixed thread count (two: the fp32 sums depend on it). Times on the
# 2-core dev machine: see each models/<name>/MODEL_CARD.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
BIN=${LLI_BUILD_DIR:-build}/train/lli-train-demo
NAMES=("$@")
((${#NAMES[@]})) || NAMES=(sam lama llava gligen owl)
for name in "${NAMES[@]}"; do
  case $name in
    sam)
      echo "== demo-sam (models/demo-sam)" >&2
      "$BIN" sam --out models/demo-sam --steps "${LLI_DEMO_SAM_STEPS:-10000}" --seed 1 --threads 2 --eval-scenes 200 \
        --progress --json
      ;;
    lama)
      echo "== demo-lama (models/demo-lama)" >&2
      "$BIN" lama --out models/demo-lama --steps "${LLI_DEMO_LAMA_STEPS:-8000}" --seed 1 --threads 2 --eval-scenes 200 \
        --progress --json
      ;;
    llava)
      # the tokenizer shipped with it is the real LLaMA SentencePiece model of the llava-tiny-a fixture
      echo "== demo-llava (models/demo-llava)" >&2
      "$BIN" llava --out models/demo-llava --tokenizer tests/fixtures/llava-tiny-a \
        --vision-steps 10000 --align-steps 1500 --steps "${LLI_DEMO_LLAVA_STEPS:-3400}" --keyword-weight 1 \
        --dense-weight 0.5 --curriculum false --present-questions false --seed 1 --threads 2 --eval-questions 200 --progress --json
      ;;
    gligen)
      # the tokenizer shipped with it is the real CLIP BPE tokenizer of the gligen-gen-tiny-a fixture;
      # the evaluation's judge is the shipped demo-sam
      echo "== demo-gligen (models/demo-gligen)" >&2
      "$BIN" gligen --out models/demo-gligen --tokenizer tests/fixtures/gligen-gen-tiny-a/tokenizer \
        --vae-steps 1000 --images 32 --lr 5e-4 --unet-channels 32 64 64 --gate-init 1 --v-prediction true --min-snr 5 \
        --attention-aux 1 --attention-aux-features 0.1 --steps "${LLI_DEMO_GLIGEN_STEPS:-3400}" --seed 1 --threads 2 \
        --sam models/demo-sam --layouts 100 --progress --json
      ;;
    owl)
      # the tokenizer shipped with it is OWLv2's CLIP BPE tokenizer (pad "!") of the owlv2-tiny-a fixture
      echo "== demo-owl (models/demo-owl)" >&2
      "$BIN" owl --out models/demo-owl --tokenizer tests/fixtures/owlv2-tiny-a --init-vision models/demo-llava \
        --init-text models/demo-gligen/text_encoder --steps "${LLI_DEMO_OWL_STEPS:-6000}" --seed 1 --threads 2 \
        --eval-scenes 200 --progress --json
      ;;
    *)
      echo "train-demo-models.sh: no demo model '$name' (one of: sam, lama, llava, gligen, owl)" >&2
      exit 2
      ;;
  esac
  # the loss log is kept beside the docs, not in the shipped model directory (models/ stays <= 40 MB)
  mkdir -p docs/train-logs
  mv "models/demo-$name/train-log.tsv" "docs/train-logs/demo-$name.tsv"
done
