"""CPU tuning (`onednn_linear`): float32 CPU dense layers through oneDNN, where they need no gradient, with the same
results; off unless a pipeline enables it."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ccedit.pipelines.cpu_tuning import onednn_linear, onednn_linear_available

pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason="this torch has no oneDNN")


class OpNames(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def ops(fn) -> list[str]:
    with OpNames() as recorder:
        fn()
    return recorder.names


def test_linear_layers_go_through_onednn_with_the_same_results():
    layer = torch.nn.Linear(32, 48)
    x = torch.randn(3, 7, 32)
    strided = torch.randn(32, 3, 7).permute(1, 2, 0)  # a transposed view, as attention layers pass
    with torch.no_grad():
        for inputs in (x, strided):
            expected = layer(inputs)
            with onednn_linear():
                names = ops(lambda: layer(inputs))
                got = layer(inputs)
                no_bias = F.linear(inputs, layer.weight)
            assert "_linear_pointwise" in names and "addmm" not in names
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(no_bias, F.linear(inputs, layer.weight), rtol=1e-5, atol=1e-5)


def test_calls_that_need_a_gradient_or_other_types_keep_torchs_path():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(5, 8)
    with onednn_linear():
        assert "_linear_pointwise" not in ops(lambda: layer(x))  # the weight needs a gradient: autograd's path
        out = layer(x)
        out.sum().backward()
        assert layer.weight.grad is not None
        with torch.no_grad():
            assert "_linear_pointwise" not in ops(lambda: layer.double()(x.double()))
    with torch.no_grad(), onednn_linear(enabled=False):
        assert "_linear_pointwise" not in ops(lambda: layer.float()(x))


def test_the_pipeline_uses_onednn_on_the_cpu_only_when_cpu_tuning_is_enabled():
    import numpy as np

    from ccedit.kinds import load_pipeline

    pipe = load_pipeline("tiny", device="cpu", dtype="float32")
    video = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    maps = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def edit():
        return pipe("a", video, [maps], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                    progress=False, output_type="latent").frames

    with OpNames() as recorder:
        slow = edit()
    assert "_linear_pointwise" not in recorder.names  # off by default
    pipe.enable_cpu_tuning()
    with OpNames() as recorder:
        fast = edit()
    assert "_linear_pointwise" in recorder.names and "addmm" not in recorder.names
    # the same float32 arithmetic in another order, through two scheduler steps
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5 * slow.abs().max().item())
