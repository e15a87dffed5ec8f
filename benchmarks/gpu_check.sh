#!/usr/bin/env bash
# One-GPU check of speed and memory at the paper's settings; prints one JSON object (a few
# minutes on an 80-140 GB GPU, at most 8). Run from anywhere:
#     bash benchmarks/gpu_check.sh [device]          # default cuda; PYTHON=... picks python
#   mkdt_full, mkdt_checkpoint: s/iteration and peak memory at the paper's CIFAR setting
#                  (1000 x 40 x 256, ConvNet-D3 width 128) in both unroll modes, the full
#                  graph's estimate and what unroll=auto picks on this device
#   experts:       seconds per expert-epoch, one by one vs vmapped groups (5000 images, b 256)
#   krrst:         outer-step time at 1000 learned / 1024 real, width 128, ResNet-18 teacher
#   teacher:       a Barlow Twins ResNet-18 epoch over CIFAR's 50,000 images, from 20 batches
#   precision:     the meta-gradient under default / tf32 / bf16 vs strict fp32 (cosine)
# SMOKE=1 runs every part at toy sizes. DEVICE=meta SMOKE=1 runs it on the CUDA stand-in
# (mkdt_bench.standin; no GPU needed, shapes and device placement only): what CI runs.
set -euo pipefail
DEVICE="${1:-${DEVICE:-cuda}}"
PY="${PYTHON:-python}"
cd "$(dirname "$0")"
if [[ "${SMOKE:-0}" == 1 ]]; then
  MKDT=(--images 10 --syn-steps 2 --batch-syn 5 --width 8 --warmup 0 --iterations 1)
  EXPERTS=(--images 64 --batch 16 --experts 2 --groups 2 --width 8)
  KRRST=(--images 20 --real-batch 32 --width 8 --teacher convnet:width=8 --steps 1 --warmup 0)
  TEACHER=(--images 128 --batch 64 --arch convnet:width=8 --proj-dim 16)
  PREC=(--images 10 --syn-steps 2 --batch-syn 5 --width 8)
else
  MKDT=(--images 1000 --syn-steps 40 --batch-syn 256 --width 128 --warmup 1 --iterations 2)
  EXPERTS=(--images 5000 --batch 256 --experts 8 --groups 2,4,8 --width 128)
  KRRST=(--images 1000 --real-batch 1024 --width 128 --teacher resnet18-teacher --steps 5)
  TEACHER=(--images 5120 --batch 256 --arch resnet18-teacher --proj-dim 2048)
  PREC=(--images 1000 --syn-steps 40 --batch-syn 256 --width 128)
fi
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
# A GPU too small for the full graph (~43 GiB) reports that instead of stopping the check.
"$PY" distill_speed.py "${MKDT[@]}" --engine full --device "$DEVICE" > "$OUT/mkdt_full.json" ||
  echo '{"engine": "full", "error": "failed (out of memory? see stderr)"}' > "$OUT/mkdt_full.json"
"$PY" distill_speed.py "${MKDT[@]}" --engine checkpoint --device "$DEVICE" > "$OUT/mkdt_checkpoint.json"
"$PY" experts_speed.py "${EXPERTS[@]}" --device "$DEVICE" > "$OUT/experts.json"
"$PY" krrst_speed.py "${KRRST[@]}" --device "$DEVICE" > "$OUT/krrst.json"
"$PY" teacher_speed.py "${TEACHER[@]}" --device "$DEVICE" > "$OUT/teacher.json"
"$PY" precision_check.py "${PREC[@]}" --device "$DEVICE" > "$OUT/precision.json"
"$PY" - "$OUT" "$DEVICE" <<'PYEOF'
import json, sys
from pathlib import Path
import torch
out, device = Path(sys.argv[1]), sys.argv[2]
name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
report = {"device": device, "device_name": name, "torch": torch.__version__}
for path in sorted(out.glob("*.json")):
    report[path.stem] = json.loads(path.read_text().strip().splitlines()[-1])
print(json.dumps(report, indent=1))
PYEOF
