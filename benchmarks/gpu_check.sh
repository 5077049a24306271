#!/usr/bin/env bash
# The triton engine on a real GPU, in one run of at most about 8 minutes (every step has its own time limit,
# so that a 15-minute device lease leaves room to rerun it):
#   1. the gpu-marked tests: compilation, equality with the reference engine on CUDA (float64 1e-10,
#      float32 2e-4; default and small tiles), the paper-size LSTM within the device's resource limits;
#   2. `plasticnet bench --device cuda` on the [D23] paper configurations (B = 64, matched hidden sizes): one
#      training step per engine, wall ms between synchronisations and peak CUDA memory, one JSON line per run
#      on stdout as soon as it ends (a run cut short still leaves every finished line), tables on stderr.
# Usage: benchmarks/gpu_check.sh [python] > gpu.jsonl   (from the repository root; needs torch with CUDA and triton)
set -u
PY=${1:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # the programs compiled for the GPU, not interpreted
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
'device', torch.cuda.get_device_name(0))" >&2 || exit 1

status=0
timeout 180 "$PY" -m pytest -q -m gpu -rs -s tests/test_triton_engine.py >&2 || status=$?

# bench LIMIT_S OPTIONS...: one `plasticnet bench` on cuda within LIMIT_S seconds. Each run is its own process
# (a few seconds to start, plus the triton programs' compilation on the first run of each size), limited to
# 60 s; the steps themselves take milliseconds, so 2 warm-up and 5 timed steps cost nothing.
bench() {
    local limit=$1
    shift
    timeout "$limit" "$PY" -m plasticnet bench --device cuda --json --warmup 2 --repeats 5 --timeout 60 "$@" \
        || status=$?
}
# The paper's LSTM on every task and rule (T = 20 to 70): triton against the non-plastic network and the fast engine.
bench 150 --cells lstm --engines triton,fast,none
# The RNN at the shortest and the longest episode (T = 20 and T = 70).
bench 70 --tasks cue-reward,seq-L5-d60 --cells rnn --engines triton,fast,none
# The reference engine on cue-reward only (T = 20): at T = 70 it is slow and needs several GB per step.
bench 50 --tasks cue-reward --engines reference
exit $status
