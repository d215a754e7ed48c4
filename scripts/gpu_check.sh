#!/usr/bin/env bash
# The prepared GPU check for the device machine (torch with CUDA; no Ray, MLflow, DVC or data folder).
#   scripts/gpu_check.sh prepare   # here: tmp/gpu/photo.pt (chicago.jpg as a tensor)
#   scripts/gpu_check.sh run       # there (carry tmp/gpu): the CUDA speed table into $OUT (benchmarks/speed_cuda.py)
# The weights are a shipped release file (WEIGHTS, default models/style-la_muse.safetensors): it travels with the code.
# One run took 2 min on an H200 (2026-12-04; the two torch.compile builds are most of it); every row is
# printed and saved as it finishes, so a time limit keeps what was measured.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-run}" in
  prepare)
    PY=${PY:-.venv/bin/python}
    mkdir -p tmp/gpu
    "$PY" - <<'PYEOF'
import os, sys
from pathlib import Path
import torch
sys.path.insert(0, ".")
from perceptual_core.io import load_image
data = Path(os.environ.get("PERCEPTUAL_DATA_DIR", "../shared/data"))
x = load_image(data / "styles/content_images/chicago.jpg").to_tensor()
torch.save((x * 255).round().to(torch.uint8).contiguous(), "tmp/gpu/photo.pt")
print("tmp/gpu:", sorted(p.name for p in Path("tmp/gpu").iterdir()))
PYEOF
    ;;
  run)
    OUT=${OUT:-tmp/gpu_out}
    mkdir -p "$OUT"
    (nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
    PY=${PY:-python}
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
    timeout "${SPEED_TIMEOUT:-480}" "$PY" benchmarks/speed_cuda.py --weights "${WEIGHTS:-models/style-la_muse.safetensors}" --photo tmp/gpu/photo.pt \
      --json "$OUT/speed_cuda.json" 2>&1 | tee "$OUT/speed_cuda.log"
    ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
