#!/usr/bin/env bash
# One-GPU check of the "fast and lean" numbers; prints one JSON object (about 3-6 minutes on
# an H100-class GPU). Run from the repository root:   bash benchmarks/gpu_check.sh [device]
#   mkdt_*:        s/iteration and peak memory at the paper's CIFAR setting (1000 x 40 x 256,
#                  ConvNet-D3 width 128) with unroll=full and unroll=checkpoint
#   experts:       seconds per expert-epoch, one by one vs vmapped groups (5000 images, b 256)
#   krrst:         outer-step time at 1000 learned / 1024 real, width 128, ResNet-18 teacher
#   precision:     TF32 and bf16-autocast meta-gradients vs float32 (cosine, offer if >= 0.99)
# SMOKE=1 runs every part at toy sizes (works on the CPU too: DEVICE=cpu SMOKE=1).
set -euo pipefail
DEVICE="${1:-${DEVICE:-cuda}}"
PY="${PYTHON:-python}"
cd "$(dirname "$0")"
if [[ "${SMOKE:-0}" == 1 ]]; then
  MKDT=(--images 10 --syn-steps 2 --batch-syn 5 --width 8 --warmup 0 --iterations 1)
  EXPERTS=(--images 64 --batch 16 --experts 2 --groups 2 --width 8)
  KRRST=(--images 20 --real-batch 32 --width 8 --teacher convnet:width=8 --steps 1 --warmup 0)
  PREC=(--images 10 --syn-steps 2 --batch-syn 5 --width 8)
else
  MKDT=(--images 1000 --syn-steps 40 --batch-syn 256 --width 128 --warmup 1 --iterations 2)
  EXPERTS=(--images 5000 --batch 256 --experts 8 --groups 2,4,8 --width 128)
  KRRST=(--images 1000 --real-batch 1024 --width 128 --teacher resnet18-teacher --steps 5)
  PREC=(--images 1000 --syn-steps 40 --batch-syn 256 --width 128)
fi
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$PY" distill_speed.py "${MKDT[@]}" --engine full --device "$DEVICE" > "$OUT/mkdt_full.json"
"$PY" distill_speed.py "${MKDT[@]}" --engine checkpoint --device "$DEVICE" > "$OUT/mkdt_checkpoint.json"
"$PY" experts_speed.py "${EXPERTS[@]}" --device "$DEVICE" > "$OUT/experts.json"
"$PY" krrst_speed.py "${KRRST[@]}" --device "$DEVICE" > "$OUT/krrst.json"
"$PY" precision_check.py "${PREC[@]}" --device "$DEVICE" > "$OUT/precision.json"
"$PY" - "$OUT" "$DEVICE" <<'PYEOF'
import json, sys
from pathlib import Path
import torch
out, device = Path(sys.argv[1]), sys.argv[2]
name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
report = {"device": device, "device_name": name, "torch": torch.__version__}
for path in sorted(out.glob("*.json")):
    report[path.stem] = json.loads(path.read_text().strip().splitlines()[-1])
print(json.dumps(report, indent=1))
PYEOF
