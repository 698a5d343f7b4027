"""What every model kind's loader shares: the dtype and device a setting names, and whether offload applies.
The loaders themselves live with their kinds (`ccedit.kinds`)."""

from __future__ import annotations

import torch

from ..config_checks import DTYPE_NAMES
from ..errors import ModelNotFoundError

DTYPES = {name: getattr(torch, dtype) for name, dtype in DTYPE_NAMES.items()}  # besides "auto"


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ModelNotFoundError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    return DTYPES[dtype]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def offloads(cpu_offload: bool, device: torch.device) -> bool:
    """Whether `model.cpu_offload` takes effect: model offload needs a CUDA device (elsewhere it is ignored)."""
    return cpu_offload and device.type == "cuda"
