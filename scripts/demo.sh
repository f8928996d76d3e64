#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs a demo pipeline: lli's own demo models
# (demo-gligen, demo-llava, demo-sam, demo-lama, demo-owl) on a generated shapes-world scene, then samples/
# with the classical backends (GrabCut segmentation, Telea removal). Outputs go to demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
BIN=${LLI_BUILD_DIR:-build}/tools
OUT=demo-out
rm -rf "$OUT" && mkdir -p "$OUT"
export LLI_CONFIG=$PWD/configs/models.yaml

echo "== 0. lli's demo models, trained by lli itself on its synthetic shapes world (models/): a scene"
echo "      generated from a caption and a layout (demo-gligen), the object drawn in the left box (asked"
echo "      for as a red cross; demo-gligen draws a rough red shape there) segmented from a stroke drawn"
echo "      across it (demo-sam), removed (demo-lama; Telea beside it); then the same as one piped"
echo "      session that asks demo-llava what is in the picture before and after; the blue circle found"
echo "      by name (demo-owl's box, demo-sam's mask: the tools take the demo models when nothing else is"
echo "      installed, and say so)"
mkdir -p "$OUT/shapes"
cat > "$OUT/shapes/layout.json" <<'EOF'
{"text": "a red cross left of a blue circle",
 "boxes": [{"box": [6, 20, 30, 44], "phrase": "red cross"}, {"box": [36, 20, 60, 44], "phrase": "blue circle"}]}
EOF
GEN=(-m demo-gligen --layout "$OUT/shapes/layout.json" --seed 16 --steps 25)
"$BIN/lli-generate" "${GEN[@]}" -o "$OUT/shapes/scene.png" --json
"$BIN/lli-segment" -m demo-sam -i "$OUT/shapes/scene.png" --stroke "10,32 26,32" \
  -o "$OUT/shapes/cross.mask.png" --overlay "$OUT/shapes/cross.overlay.png" --json
"$BIN/lli-edit" remove --backend lama -m demo-lama -i "$OUT/shapes/scene.png" --mask "$OUT/shapes/cross.mask.png" \
  -o "$OUT/shapes/scene.nocross.png" --json
"$BIN/lli-edit" remove --backend telea -i "$OUT/shapes/scene.png" --mask "$OUT/shapes/cross.mask.png" \
  -o "$OUT/shapes/scene.nocross.telea.png" --json
"$BIN/lli-segment" --backend sam -i "$OUT/shapes/scene.png" --text "blue circle" \
  -o "$OUT/shapes/circle.mask.png" --overlay "$OUT/shapes/circle.overlay.png" --json
mkdir -p "$OUT/shapes/session"
S=(--session - --session-dir "$OUT/shapes/session")
"$BIN/lli-generate" "${GEN[@]}" "${S[@]}" \
  | "$BIN/lli-chat" -m demo-llava "What is in the picture?" --temperature 0 "${S[@]}" \
  | "$BIN/lli-segment" -m demo-sam --stroke "10,32 26,32" "${S[@]}" \
  | "$BIN/lli-edit" remove --backend lama -m demo-lama "${S[@]}" \
  | "$BIN/lli-chat" -m demo-llava "What is in the picture?" --temperature 0 "${S[@]}" \
  > "$OUT/shapes/session/session.json"
echo "session file ($OUT/shapes/session/session.json):"; cat "$OUT/shapes/session/session.json"

echo "== 1. segment the ball in messi5.jpg (stroke + box, GrabCut), with an overlay"
"$BIN/lli-segment" -i samples/messi5.jpg --prompt samples/prompts/messi5.json \
  -o "$OUT/ball.mask.png" --overlay "$OUT/ball.overlay.png" --json

echo "== 2. remove it (mask dilated 8 px, Telea)"
"$BIN/lli-edit" remove -i samples/messi5.jpg --mask "$OUT/ball.mask.png" -o "$OUT/messi5.noball.png" --json

echo "== 3. the same as a piped session: segment | remove, then undo with --from-step 0"
mkdir -p "$OUT/session"
"$BIN/lli-segment" -i samples/fruits.jpg --prompt samples/prompts/fruits.json --session - --session-dir "$OUT/session" \
  | "$BIN/lli-edit" remove --session - --session-dir "$OUT/session" --dilate 12 > "$OUT/session/session.json"
"$BIN/lli-edit" remove --session "$OUT/session/session.json" --from-step 0 --dilate 2 --json
echo "session file ($OUT/session/session.json):"; cat "$OUT/session/session.json"

echo "== 4. batch: every sample, prompts paired by stem, resumable, sharded in 2"
"$BIN/lli-segment" -i samples/ --prompt samples/prompts/ --outdir "$OUT/batch" --shard 1/2 --json
"$BIN/lli-segment" -i samples/ --prompt samples/prompts/ --outdir "$OUT/batch" --shard 2/2 --json
"$BIN/lli-edit" remove -i samples/ --mask "$OUT/batch" --outdir "$OUT/batch/clean" --json

echo "== 5. the model tools say what they need"
"$BIN/lli-chat" -m llava-1.5-7b -i samples/messi5.jpg "what is in the picture?" || echo "(lli-chat exit code $?)"
"$BIN/lli-generate" -m gligen-generation --text "a red ball on grass" -o "$OUT/ball.png" || echo "(lli-generate exit code $?)"

echo "== outputs in $OUT/:"
find "$OUT" -type f | sort
