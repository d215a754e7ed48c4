#!/usr/bin/env bash
# Paper-scale training of one released style on a single-GPU machine that has only torch
# (no Ray, MLflow, DVC, network or data folder): pipelines/gpu_bundle.py.
#   scripts/gpu_train.sh pack STYLE            # here: tmp/gpu_bundle (photos, style image, VGG-16 loss part, params)
#   scripts/gpu_train.sh run STYLE [SECONDS]   # there (carry tmp/gpu_bundle): prepare --no-ray + train into $OUT
# 256² crops, batch 4, bf16 autocast, channels_last, 40,000 iterations or SECONDS of wall time (default
# release.gpu.max_seconds, 480); a checkpoint every 1,000 iterations and at the end. $OUT gets
# style-STYLE.safetensors (fp32), gpu_train.json (device, it/s, iterations, losses) and the logs; back here,
# `python -m pipelines.release export style-STYLE --from-gpu DIR` ships it (card, quality table, manifest).
set -euo pipefail
cd "$(dirname "$0")/.."
STYLE=${2:-starry_night}
case "${1:-run}" in
  pack)
    PY=${PY:-.venv/bin/python}
    "$PY" -m pipelines.gpu_bundle pack "style-$STYLE" --out "${BUNDLE:-tmp/gpu_bundle}"
    ;;
  run)
    OUT=${OUT:-tmp/gpu_train_out}
    mkdir -p "$OUT"
    (nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
    PY=${PY:-python3}
    ARGS=(run "style-$STYLE" --bundle "${BUNDLE:-tmp/gpu_bundle}" --out "$OUT")
    if [ -n "${3:-}" ]; then ARGS+=(--seconds "$3"); fi
    if [ -n "${ITERATIONS:-}" ]; then ARGS+=(--iterations "$ITERATIONS"); fi
    PYTHONUNBUFFERED=1 "$PY" -m pipelines.gpu_bundle "${ARGS[@]}" 2>&1 | tee "$OUT/gpu_train.log"
    ;;
  *) echo "usage: $0 pack|run STYLE [SECONDS]" >&2; exit 2 ;;
esac
