#!/usr/bin/env bash
# What a hand-written ComfyUI + Nunchaku installer does, one step after another: clone, venv, torch,
# requirements, plugin, models one by one with curl, then start ComfyUI. The comparison subject of
# bench/cold.py, which sets every variable below (upstreams on 127.0.0.1).
#   ROOT GIT_BASE COMFYUI_REF PLUGIN_REF INDEX_URL PYTHON MODELS (lines "URL RELATIVE_PATH") PORT TORCH_PINS
set -euo pipefail

mkdir -p "$ROOT"
cd "$ROOT"

git clone -q --branch "$COMFYUI_REF" "$GIT_BASE/Comfy-Org/ComfyUI" ComfyUI
"$PYTHON" -m venv venv
# shellcheck disable=SC2086  # TORCH_PINS is a list of requirement words
venv/bin/pip install -q --index-url "$INDEX_URL" $TORCH_PINS
venv/bin/pip install -q --index-url "$INDEX_URL" -r ComfyUI/requirements.txt
git clone -q --branch "$PLUGIN_REF" "$GIT_BASE/nunchaku-ai/ComfyUI-nunchaku" ComfyUI/custom_nodes/ComfyUI-nunchaku
venv/bin/pip install -q --index-url "$INDEX_URL" -r ComfyUI/custom_nodes/ComfyUI-nunchaku/requirements.txt
# A GPU box would now fetch the nunchaku wheel for its torch and CUDA; a CPU host has none to fetch.

while read -r url dest; do
    mkdir -p "ComfyUI/models/$(dirname "$dest")"
    curl -fsS --retry 3 -C - -o "ComfyUI/models/$dest" "$url"
done < "$MODELS"

cd ComfyUI
nohup ../venv/bin/python main.py --cpu --listen 127.0.0.1 --port "$PORT" > "$ROOT/comfyui.log" 2>&1 &
echo $! > "$ROOT/comfyui.pid"
