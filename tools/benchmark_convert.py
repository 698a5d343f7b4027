#!/usr/bin/env python
"""Memory and time of `ccedit convert` on a full-size checkpoint.

Builds a synthetic checkpoint with every key and shape of a released CCEdit file (from the key listing in the
reference folder; values are arbitrary, the TVI2V duplicate VAE shares storage with the main one as in the release),
then converts it in a child process that samples its own memory every 20 ms. The figure that matters is the peak of
anonymous memory (`RssAnon`): pages of the memory-mapped checkpoint (`RssFile`) are page cache, shared and
reclaimable. The target: a 10.9 GB file converts within 24 GB of RAM without holding two copies of the weights,
i.e. peak anonymous memory well below the file size.

Usage: python tools/benchmark_convert.py [--listing keys_tvi2v.json] [--dtype float32] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "ccedit"

BUILD = r"""
import json, sys, torch
listing, dtype, out = sys.argv[1], getattr(torch, sys.argv[2]), sys.argv[3]
keys = json.load(open(listing))["keys"]
state = {}
for k in keys:
    if k["group"] == "vae_duplicate_via_vae_embedder":
        continue
    dt = torch.int64 if k["dtype"] == "int64" else dtype
    state[k["key"]] = torch.zeros(k["shape"], dtype=dt) if dt == torch.int64 else torch.empty(k["shape"], dtype=dt).normal_()
for k in keys:  # the release wrote the engine's VAE a second time under the VAE embedder: same tensors
    if k["group"] == "vae_duplicate_via_vae_embedder":
        state[k["key"]] = state["first_stage_model." + k["key"].split("first_stage_model.", 1)[1]]
torch.save({"state_dict": state, "epoch": 0, "global_step": 0}, out)
"""

CONVERT = r"""
import sys, threading, time
peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
stop = False
def sample():
    while not stop:
        for line in open("/proc/self/status"):
            name = line.split(":")[0]
            if name in peak:
                peak[name] = max(peak[name], int(line.split()[1]) * 1024)
        time.sleep(0.02)
t = threading.Thread(target=sample, daemon=True); t.start()
from ccedit.convert.convert import convert_checkpoint
start = time.perf_counter()
print(convert_checkpoint(sys.argv[1], sys.argv[2], tokenizer=sys.argv[3], overwrite=True), file=sys.stderr)
elapsed = time.perf_counter() - start
stop = True; t.join()
import json; print(json.dumps({"seconds": elapsed, **peak}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listing", default=str(REFERENCE / "keys_tvi2v.json"))
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--workdir", help="where the synthetic checkpoint and the folder go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic checkpoint and the converted folder")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ccedit-convert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt, out, tok = work / "synthetic.ckpt", work / "model", work / "tokenizer"
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", BUILD, args.listing, args.dtype, str(ckpt)], check=True)
        print(f"synthetic checkpoint: {ckpt.stat().st_size / 2**30:.2f} GiB in {time.perf_counter() - t0:.0f} s")
        # The checkpoint holds no tokenizer; any CLIP tokenizer will do for measuring.
        subprocess.run([sys.executable, "-c", "import sys; from ccedit.pipelines.tiny import tiny_tokenizer; "
                        "tiny_tokenizer().save_pretrained(sys.argv[1])", str(tok)], check=True)
        run = subprocess.run([sys.executable, "-c", CONVERT, str(ckpt), str(out), str(tok)],
                             check=True, capture_output=True, text=True)
        stats = json.loads(run.stdout.strip().splitlines()[-1])
        size = ckpt.stat().st_size
        written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(run.stderr.strip().splitlines()[-1])
        print(f"converted in {stats['seconds']:.0f} s; wrote {written / 2**30:.2f} GiB")
        print(f"peak anonymous memory {stats['RssAnon'] / 2**30:.2f} GiB "
              f"({stats['RssAnon'] / size:.2f} x the checkpoint), peak file-backed {stats['RssFile'] / 2**30:.2f} GiB, "
              f"peak RSS {stats['VmRSS'] / 2**30:.2f} GiB")
        ok = stats["RssAnon"] < size and stats["VmRSS"] < 24 * 2**30
        print("PASS: no second copy of the weights is held" if ok else "FAIL: conversion held a second copy")
        return 0 if ok else 1
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
