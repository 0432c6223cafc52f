#!/usr/bin/env bash
# charlstm-train on GPUs: one GPU, then every GPU of the machine under torchrun (NCCL), the
# default model, the same global lanes; prints each run's summary line (its chars/s).
#   bash bench/gpu.sh [CORPUS]        # needs torch with CUDA and the train extra
# Prepared for a machine with GPUs; this project's CI machines have none (docs/training.md, "Several
# GPUs or machines"). Each run is short: 200 steps, one validation on a small tail.
set -euo pipefail
corpus=${1:-../shared/data/moliere.txt}
out=$(mktemp -d)
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
[ "$gpus" -ge 1 ] || { echo "no CUDA GPU visible to torch" >&2; exit 2; }
common=("$corpus" --max-steps 200 --eval-every 200 --val-fraction 0.01 --batch-size $((64 * gpus)) --precision bf16
        --no-progress --cache-dir "$out")
python -c "import torch; print('torch', torch.__version__, 'GPUs:', [torch.cuda.get_device_name(i) for i in range($gpus)])"
echo "1 GPU:"
charlstm-train "${common[@]}" -o "$out/one.pt" --device cuda | tail -1
if [ "$gpus" -gt 1 ]; then
  echo "$gpus GPUs (torchrun, NCCL):"
  torchrun --standalone --nproc_per_node="$gpus" -m charlstm.train "${common[@]}" -o "$out/all.pt" --device cuda | tail -1
fi
rm -rf "$out"
