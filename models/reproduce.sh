#!/usr/bin/env bash
# Reproduce models/moliere.onnx from the corpus, end to end: train, export, measure.
# 1.5-3 hours on 2 idle CPU cores with AVX512-BF16 (90 min with AMX); a GPU takes --device cuda and minutes.
# A CPU without AVX512-BF16 or AMX refuses --precision bf16 (one line, exit 2): fp32 trains there, in other bits
# and several times slower (1.5k characters/s on one core of an AMD EPYC without them).
# Interrupted (Ctrl-C, a reboot), it continues exactly where it stopped: run it again.
#   bash models/reproduce.sh [CORPUS] [OUTPUT_FOLDER]
set -euo pipefail
corpus=${1:-../shared/data/moliere.txt}
out=${2:-runs/moliere}
mkdir -p "$out"
resume=()
[ -f "$out/moliere.last.pt" ] && resume=(--resume "$out/moliere.last.pt")
charlstm-train "$corpus" -o "$out/moliere.pt" --hidden-size 512 --num-layers 3 --embed-dim 64 --dropout 0 \
    --input-dropout 0.1 --hidden-dropout 0.25 --output-dropout 0.2 --weight-drop 0.4 --ema 0.999 \
    --precision bf16 --epochs 50 --eval-every 200 --threads 2 "${resume[@]}"
charlstm-export "$out/moliere.pt" -o "$out/moliere.onnx" --no-prefill
python bench/model_card.py "$out/moliere.onnx" "$corpus"
