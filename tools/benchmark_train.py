"""Train the acceptance config (configs/train/tiny.yaml) on this CPU and print how far the loss falls.

    PYTHONPATH=$PWD python tools/benchmark_train.py [--steps 300] [--output DIR [--overwrite]]

Prints the mean loss of the first and of the last tenth of the steps, their ratio (the acceptance bound is 0.7)
and the wall time.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccedit.training import load_train_config, train  # noqa: E402
from ccedit.training.trainer import loss_summary  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--output", help="run folder (default: a temporary one)")
    parser.add_argument("--overwrite", action="store_true", help="start over the run already in --output")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        output = args.output or tmp
        config = load_train_config(Path(__file__).resolve().parents[1] / "configs/train/tiny.yaml",
                                   [f"output={output}", f"train.max_steps={args.steps}", "train.checkpoint_every=100000"])
        start = time.perf_counter()
        result = train(config, overwrite=args.overwrite)
        seconds = time.perf_counter() - start
    first, last = loss_summary(result.losses)
    print(f"steps: {len(result.losses)}  wall: {seconds:.1f} s")
    print(f"mean loss, first tenth: {first:.4f}  last tenth: {last:.4f}  ratio: {last / first:.3f} (bound 0.7)")
    return 0 if last <= 0.7 * first else 1


if __name__ == "__main__":
    sys.exit(main())
