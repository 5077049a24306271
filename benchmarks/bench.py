"""Engine benchmark: ``python benchmarks/bench.py [options]`` = ``plasticnet bench [options]``.

Time and peak memory of one training step (forward + backward + AdamW) of the
fast engine, the reference engine and the non-plastic network on the [D23]
paper configurations; see :mod:`plasticnet.bench` for what is measured and how.
Example (a quick subset): ``python benchmarks/bench.py --tasks cue-reward --cells rnn --repeats 1``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from plasticnet.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
