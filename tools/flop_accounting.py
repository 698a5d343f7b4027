"""FLOP accounting and the device's dense-matmul peak, shared by `benchmark.py` and `benchmark_network.py`.

`torch.utils.flop_counter.FlopCounterMode` counts convolutions and matmuls but has no formula for the CPU kernel of
`scaled_dot_product_attention`, nor for oneDNN's linear operator (ccedit's dense layers on the CPU): the first is
counted by hand while it runs, the second gets a formula.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


@contextlib.contextmanager
def counting_attention_flops():
    """Count `2·N·Lq·Lk·(E + Ev)` per `F.scaled_dot_product_attention` call (QK^T and PV) while active; yields
    `{"flops": ..., "calls": ...}`."""
    original = F.scaled_dot_product_attention
    counts = {"flops": 0, "calls": 0}

    def counted(query, key, value, *args, **kwargs):
        n = query.shape[:-2].numel()
        counts["flops"] += 2 * n * query.shape[-2] * key.shape[-2] * (query.shape[-1] + value.shape[-1])
        counts["calls"] += 1
        return original(query, key, value, *args, **kwargs)

    F.scaled_dot_product_attention = counted  # ccedit and diffusers both look it up on the module at call time
    try:
        yield counts
    finally:
        F.scaled_dot_product_attention = original


def flop_counter() -> FlopCounterMode:
    """A `FlopCounterMode` that also counts oneDNN's linear operator."""
    formulas = {}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):

        def linear(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
            return 2 * int(np.prod(x_shape[:-1])) * x_shape[-1] * w_shape[0]

        formulas[torch.ops.mkldnn._linear_pointwise] = linear
    return FlopCounterMode(display=False, custom_mapping=formulas)


def counts_attention_itself(counter: FlopCounterMode) -> bool:
    """Whether this torch's counter counted the attention kernel (then the hand count must not be added)."""
    return any("attention" in str(op) for op in counter.get_flop_counts().get("Global", {}))


def gemm_peak_flops(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 7,
                    onednn: bool = True) -> float:
    """Dense matmul throughput of the device in FLOP/s: the median of timed `size`-cubed products, through the
    fastest of torch's matmul and, on the CPU with `onednn`, oneDNN's (which ccedit's dense layers use: on AMD CPUs
    torch's BLAS reaches about half of it)."""
    from ccedit.pipelines.cpu_tuning import onednn_linear_available

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    kernels = {"torch.mm": lambda: torch.mm(a, b)}
    if onednn and device == "cpu" and dtype == torch.float32 and onednn_linear_available():
        kernels["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    best = 0.0
    for kernel in kernels.values():
        kernel()  # warm-up: thread pool and packing buffers
        times = []
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            kernel()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        best = max(best, 2 * size**3 / statistics.median(times))
    return best
