"""CPU tuning, opt-in (`model.cpu_tuning=true`, `CCEditPipeline.enable_cpu_tuning`): dense layers through oneDNN
on the CPU, `onednn_linear()`. The networks know nothing of it: the pipeline enters the mode around its own calls.

PyTorch runs a float32 `F.linear` on the CPU through its BLAS (MKL in the official builds), and its convolutions
through oneDNN. Where MKL does not take its fastest path (AMD CPUs: on this project's 2-core AMD EPYC test machine,
MKL's sgemm reaches about 220 GFLOP/s and oneDNN's matmul about 470), the attention projections and feed-forwards,
which took about half of the video UNet's time there, run at half the speed of the convolutions next to them. oneDNN's fp32 matmul is the same
float32 arithmetic in another order (results agree to about 1e-6 relative).

PyTorch offers no switch for this, so a `TorchFunctionMode` sends `F.linear` calls that need no gradient to
oneDNN's linear operator (`torch.ops.mkldnn._linear_pointwise`, the one its compiler uses for CPU linears) for the
duration of a `with` block: thread-local, and only for the code inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN and its linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class OneDNNLinearMode(TorchFunctionMode):
    """Run eligible `F.linear` calls through oneDNN: float32 CPU tensors, no gradient needed, 2-D weight."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # Under torch.compile the compiler chooses the kernels (its oneDNN lowering needs frozen weights).
        if func is F.linear and not torch.compiler.is_compiling():
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if _eligible(x, weight, bias):
                # oneDNN reads a strided input slowly (1.3x slower than copying it first at 4096x320)
                return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")
        return func(*args, **kwargs)


def _eligible(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if any(type(t) not in (torch.Tensor, torch.nn.Parameter) for t in tensors):  # other subclasses keep their path
        return False
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    if x.dim() < 2 or weight.dim() != 2 or not weight.is_contiguous():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))  # the operator has no backward


@contextlib.contextmanager
def onednn_linear(enabled: bool = True) -> Iterator[None]:
    """Inside the block, float32 CPU `F.linear` calls that need no gradient run through oneDNN (see the module
    docstring); a no-op when `enabled` is false or this torch has no oneDNN."""
    if not enabled or not onednn_linear_available():
        yield
        return
    with OneDNNLinearMode():
        yield
