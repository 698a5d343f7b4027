"""tools/benchmark.py's accounting: FLOPs with the attention the counter misses, per branch, exactly."""

import torch
import torch.nn.functional as F

from tests.conftest import load_tool


class Attend(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 16, bias=False)

    def forward(self, x):  # (batch, heads, tokens, 16)
        x = self.proj(x)
        return F.scaled_dot_product_attention(x, x, x)


def test_count_flops_adds_attention_and_splits_branches():
    tool = load_tool("benchmark")
    inner, outer = Attend(), torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(2, 3, 10, 16)

    def run():
        with torch.no_grad():
            return outer(inner(x))

    flops = tool.count_flops(run, {"attend": [inner], "head": [outer], "both": [inner, outer]})
    linear = 2 * (2 * 3 * 10) * 16 * 16
    attention = 2 * (2 * 3) * 10 * 10 * (16 + 16)  # QK^T and PV
    head = 2 * (2 * 3 * 10) * 16 * 8
    assert flops["attention_added"] == attention
    assert flops["attend"] == linear + attention and flops["head"] == head
    assert flops["both"] == flops["total"] == linear + attention + head


def test_model_flops_count_the_hint_encoding_once_per_frame():
    tool = load_tool("benchmark")
    hint, net = torch.nn.Linear(16, 16, bias=False), torch.nn.Linear(16, 16, bias=False)
    frames = torch.randn(3, 16)

    def run(calls):
        with torch.no_grad():
            for _ in range(calls):  # the maps of all 3 frames encoded again at every call
                net(hint(frames))

    once = tool.count_flops(lambda: run(1), {"hint encoder": [hint]})
    again = tool.count_flops(lambda: run(4), {"hint encoder": [hint]})
    hint_flops = 2 * 3 * 16 * 16
    assert again["hint_frames"] == 12 and again["hint encoder"] == 4 * hint_flops
    assert tool.model_flops(once, frames=3) == once["total"] == 2 * hint_flops
    # the work of four calls: four network passes, but the frames' hints only once
    assert tool.model_flops(again, frames=3) == 4 * hint_flops + hint_flops


def test_dense_layers_run_through_onednn_are_counted():
    from ccedit.pipelines.cpu_tuning import onednn_linear, onednn_linear_available

    if not onednn_linear_available():
        import pytest

        pytest.skip("this torch has no oneDNN")
    tool = load_tool("benchmark")
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(2, 5, 16)

    def run(enabled):
        with torch.no_grad(), onednn_linear(enabled):
            layer(x)

    assert tool.count_flops(lambda: run(True), {})["total"] == tool.count_flops(lambda: run(False), {})["total"] \
        == 2 * 10 * 16 * 8
