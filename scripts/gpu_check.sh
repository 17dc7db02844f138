#!/usr/bin/env bash
# One prepared GPU check (issue 18), under 8 minutes on one GPU: per-family training images/s, sampling latency and
# MFU at the seed configurations (fp32, bf16, bf16 + torch.compile), then the main job's DDPM trained for 3 minutes.
# Results: gpu-check/gpu_check.md and gpu_check.json (or $1). Extra arguments go to scripts/gpu_check.py, e.g.
# `--data-root DIR` (staged MNIST for the DDPM run), `--dry` (this CPU, tiny sizes).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --out "$out" "$@"
