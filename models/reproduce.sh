#!/usr/bin/env bash
# Reproduce models/moliere.onnx from the corpus, end to end: train, export, measure.
# About 50 minutes on 2 CPU cores (AVX512-BF16); a GPU takes --device cuda and minutes.
#   bash models/reproduce.sh [CORPUS] [OUTPUT_FOLDER]
set -euo pipefail
corpus=${1:-../shared/data/moliere.txt}
out=${2:-runs/moliere}
mkdir -p "$out"
charlstm-train "$corpus" -o "$out/moliere.pt" --hidden-size 512 --num-layers 3 --dropout 0.3 \
    --precision bf16 --epochs 25 --eval-every 100
charlstm-export "$out/moliere.pt" -o "$out/moliere.onnx" --no-prefill
python bench/model_card.py "$out/moliere.onnx" "$corpus"
