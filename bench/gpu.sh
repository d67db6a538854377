#!/bin/bash
# The engine benchmark on a GPU machine, in one command, from the repository alone.
#
# Here, once (fills .gpu/, ignored by git: the pinned transformers wheel for the GPU machine's
# Python, and the default model's config and tokenizer; the converted weights stay here):
#     ../shared/gpu/prepare.sh
# There (carry .gpu; $OUT, if set, receives the JSON report):
#     bash bench/gpu.sh [extra bench.engine options]
# The architecture is built with random weights from the config: same shapes, same speed.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d .gpu/whl && -d .gpu/model ]] || { echo "no .gpu/: run ../shared/gpu/prepare.sh first (on the dev machine)"; exit 1; }
python3 -m pip install -q --no-index --no-deps --target .gpu/site .gpu/whl/*.whl
export PYTHONPATH=$PWD/.gpu/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
out=${OUT:-.}/engine-gpu.json
python3 -m bench.engine --device cuda:0 --model-dir .gpu/model --levels 1,8,32,64,128 --out "$out" "$@"
