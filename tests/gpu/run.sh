#!/usr/bin/env bash
# Real-GPU telemetry checks as one short job (about a minute; capped at 5) on any machine with
# an NVIDIA GPU. Needs only: torch, nvidia-ml-py, psutil, prometheus-client, pytest (click and
# rich for the inventory print). No install of infprof: the repository root goes on PYTHONPATH.
# Prints the roofline table of the GPU it finds and a table of what was measured; with OUT set,
# also writes $OUT/gpu_telemetry.{md,json}, $OUT/roofline.md and $OUT/gpus.json (the inventory).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not found (NVML is still tried)"
"$PY" - <<'PYEOF' || true
import importlib.metadata as m
for d in ("torch", "nvidia-ml-py", "psutil", "prometheus-client", "pytest", "click", "rich"):
    try:
        print(f"{d} {m.version(d)}")
    except m.PackageNotFoundError:
        print(f"{d} missing")
PYEOF
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    "$PY" -m profiler gpus --json >"$OUT/gpus.json" 2>&1 || true
fi
"$PY" -m profiler gpus || true
# the roofline of the embedded default models (8B and 1B shapes) on the GPU found: shipped rows
# of profiler/data/roofline.json matched by NVML name (no pydantic needed); $OUT/roofline.md
echo "== roofline (bounds at 100% of the catalog's peaks; profiler/analysis/roofline_table.py)"
if [ -n "${OUT:-}" ]; then
    "$PY" -m profiler.analysis.roofline_table --nvml | tee "$OUT/roofline.md" || true
else
    "$PY" -m profiler.analysis.roofline_table --nvml || true
fi

timeout 290 "$PY" -m pytest tests/gpu -m gpu -q -rA -p no:cacheprovider -o addopts="" "$@"
rc=$?
[ $rc -eq 124 ] && echo "tests/gpu: timed out after 290 s"
exit $rc
