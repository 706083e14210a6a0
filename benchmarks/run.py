"""Entry script for the training-step benchmark; the runner is :mod:`rnn_backends.bench`
(inside the package, so ``rnn-backends bench`` works wherever the package is installed).

    python benchmarks/run.py run --python torch=/venvs/torch/bin/python ... --out benchmarks/results
    python benchmarks/run.py assemble benchmarks/results
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnn_backends.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
