#!/usr/bin/env bash
# The triton engine on a real GPU, in one short run (about 6 minutes at most, so that a 15-minute device
# lease leaves room to rerun it):
#   1. the gpu-marked tests: compilation, equality with the reference engine on CUDA (float64 1e-10,
#      float32 2e-4; default and small tiles), the paper-size LSTM within the device's resource limits;
#   2. a training step (forward + backward + AdamW) on CUDA per engine — triton, fast, reference and the
#      non-plastic network — on the [D23] paper configurations of `plasticnet bench` (whose own runs are
#      CPU-only), one JSON line per run.
# Usage: benchmarks/gpu_check.sh [python]   (run from the repository root; needs torch with CUDA and triton)
set -u
PY=${1:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
'device', torch.cuda.get_device_name(0))" || exit 1

status=0
timeout 240 "$PY" -m pytest -q -m gpu -rs -s tests/test_triton_engine.py || status=$?

timeout 150 "$PY" - <<'EOF' || status=$?
import json
import time

import torch

from plasticnet import PlasticRNN, matched_hidden_size
from plasticnet.bench import TASKS

for task, cell, rule in [("cue-reward", "lstm", "gradient"), ("cue-reward", "rnn", "hebbian"),
                         ("regression-mlp", "lstm", "gradient"), ("seq-L5-d60", "lstm", "gradient"), ("seq-L5-d60", "rnn", "hebbian")]:
    if task not in TASKS:
        continue
    n_in, n_out, T = TASKS[task]
    for engine in ("triton", "fast", "reference", "none"):
        r = "none" if engine == "none" else rule
        torch.manual_seed(0)
        net = PlasticRNN(n_in, matched_hidden_size(r, cell), n_out, cell=cell, rule=r,
                         engine="fast" if engine == "none" else engine).cuda()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, amsgrad=True)
        x = torch.rand(64, T, n_in, device="cuda")
        y = torch.rand(64, T, n_out, device="cuda")
        times = []
        try:
            for rep in range(4):  # the first one compiles
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(net(x)[0], y)
                loss.backward()
                opt.step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            res = dict(ms_per_step=round(1e3 * min(times[1:]), 2),
                       peak_mb=round(torch.cuda.max_memory_allocated() / 2 ** 20, 1))
        except Exception as err:  # noqa: BLE001 - one failed run must not hide the others
            res = dict(error=f"{type(err).__name__}: {err}"[:300])
        torch.cuda.reset_peak_memory_stats()
        print(json.dumps(dict(task=task, cell=cell, rule=rule, engine=engine, T=T, **res)), flush=True)
EOF
exit $status
