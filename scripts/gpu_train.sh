#!/usr/bin/env bash
# Paper-scale training of one released style or SR network on a single-GPU machine that has only torch
# (no Ray, MLflow, DVC, network or data folder): pipelines/gpu_bundle.py.
#   scripts/gpu_train.sh pack STYLE|JOB            # here: tmp/gpu_bundle (photos, style image or init model,
#                                                  #   VGG-16 loss part, params)
#   scripts/gpu_train.sh run STYLE|JOB [SECONDS]   # there (carry tmp/gpu_bundle): prepare --no-ray + train into $OUT
#   scripts/gpu_train.sh pack la_muse,wave,starry_night   # several styles, one bundle (photos, VGG part once);
#   scripts/gpu_train.sh run la_muse,wave,starry_night [SECONDS]   # trained at once on the GPU, into $OUT/JOB/
# An argument starting with sr- (or style-) is a job name (sr-x4-feat, sr-x8-pixel, ...), anything else a
# style name (starry_night: the job style-starry_night); commas separate several style jobs.
# Style: 256² crops, batch 4, 40,000 iterations; SR (release.gpu.sr): whole 288² patches, batch 4, 200,000
# iterations, ℓ_feat from the shipped ℓ_pixel network (release.sr.init). Both: bf16 autocast, channels_last,
# or SECONDS of wall time (default release.gpu.max_seconds, 480); a checkpoint every 1,000 iterations and at
# the end. $OUT gets JOB.safetensors (fp32), gpu_train.json (device, it/s, iterations, losses, spec) and the
# logs; back here, `python -m pipelines.release export JOB --from-gpu DIR` ships it (card, quality table, manifest).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${2:-starry_night}
JOBS=()
IFS=',' read -r -a NAMES <<< "$NAME"
for N in "${NAMES[@]}"; do
  case "$N" in
    sr-*|srcnn-*|style-*) JOBS+=("$N") ;;   # srcnn-xS: refused by pack (not on the GPU path)
    *) JOBS+=("style-$N") ;;
  esac
done
# what the model cards say was run (release export --from-gpu)
export GPU_TRAIN_COMMAND="scripts/gpu_train.sh pack $NAME; scripts/gpu_train.sh run $NAME${3:+ $3}"
case "${1:-run}" in
  pack)
    PY=${PY:-.venv/bin/python}
    "$PY" -m pipelines.gpu_bundle pack "${JOBS[@]}" --out "${BUNDLE:-tmp/gpu_bundle}"
    ;;
  run)
    OUT=${OUT:-tmp/gpu_train_out}
    mkdir -p "$OUT"
    (nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
    PY=${PY:-python3}
    ARGS=(run "${JOBS[@]}" --bundle "${BUNDLE:-tmp/gpu_bundle}" --out "$OUT")
    if [ -n "${3:-}" ]; then ARGS+=(--seconds "$3"); fi
    if [ -n "${ITERATIONS:-}" ]; then ARGS+=(--iterations "$ITERATIONS"); fi
    PYTHONUNBUFFERED=1 "$PY" -m pipelines.gpu_bundle "${ARGS[@]}" 2>&1 | tee "$OUT/gpu_train.log"
    ;;
  *) echo "usage: $0 pack|run STYLE[,STYLE...]|JOB [SECONDS]  (JOB: sr-xS-pixel, sr-xS-feat or style-NAME)" >&2; exit 2 ;;
esac
