#!/usr/bin/env python
"""Compare ccedit with a reference fixture of the original CCEdit code; print `max_abs_err=<value>`.

Usage: python tools/check_parity.py FIXTURE [--geometry tiny_config.json]

Network fixtures (`tiny_*.safetensors`) compare the final output and every branch's residuals (atol 1e-5 +
rtol 1e-4); sampling fixtures (`sampling_*.safetensors`) compare the latent after every step (atol 5e-4).
Exits 1 outside the tolerance, 2 on unreadable input.
"""

import argparse
import sys

import torch

from ccedit.errors import UserError
from ccedit.parity import check_fixture


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixture", help="a tiny_*.safetensors or sampling_*.safetensors reference fixture")
    parser.add_argument("--geometry", help="geometry JSON (default: tiny_config.json next to the fixture)")
    parser.add_argument("--verbose", action="store_true", help="print the error of every compared tensor")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the fixtures were made on one thread
    try:
        result = check_fixture(args.fixture, args.geometry)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.verbose:
        for name, err in result.details.items():
            print(f"  {name}: {err:.3e}")
    print(f"max_abs_err={result.max_abs_err:.3e}")
    if not result.passed:
        print(f"{result.fixture}: outside the tolerance", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
