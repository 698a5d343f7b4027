"""`KeyMapper` bookkeeping and error messages, and the 1x1-convolution -> Linear weight reshape."""

from __future__ import annotations

import pytest
import torch

from ccedit.convert.keymap import KeyMapper, Rule, conv1x1_to_linear, format_keys, strip_prefix
from ccedit.errors import UserError


def test_conv1x1_and_linear_compute_the_same():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 7, kernel_size=1)
    linear = torch.nn.Linear(12, 7)
    with torch.no_grad():
        linear.weight.copy_(conv1x1_to_linear(conv.weight))
        linear.bias.copy_(conv.bias)
    pixels = torch.randn(2, 12, 5, 3)

    by_conv = conv(pixels)  # (b, c_out, h, w)
    by_linear = linear(pixels.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # tokens (b, h, w, c) -> (b, c_out, h, w)

    torch.testing.assert_close(by_linear, by_conv, rtol=1e-5, atol=1e-6)


def test_conv1x1_to_linear_is_a_view_and_rejects_other_kernels():
    weight = torch.randn(4, 3, 1, 1)
    assert conv1x1_to_linear(weight).data_ptr() == weight.data_ptr()
    with pytest.raises(UserError, match="1x1 convolution"):
        conv1x1_to_linear(torch.randn(4, 3, 3, 3))


def test_rules_map_and_record_consumed_keys():
    checkpoint = {
        "part.a.weight": torch.zeros(2, 3),
        "part.b.3.weight": torch.zeros(4),
        "other.c": torch.zeros(1),
    }
    mapper = KeyMapper(checkpoint, "part.", name="toy")
    mapper.apply([Rule(r"a\.(weight)", r"x.\1"), Rule(r"b\.(\d+)\.weight", lambda m: f"y.{int(m[1]) - 1}.weight")])

    state_dict, consumed = mapper.finish({"x.weight": torch.Size([2, 3]), "y.2.weight": torch.Size([4])})

    assert set(state_dict) == {"x.weight", "y.2.weight"}
    assert consumed == {"part.a.weight", "part.b.3.weight"}


def test_finish_lists_unmapped_missing_and_mismatched_keys_on_one_line():
    checkpoint = {f"p.extra{i}": torch.zeros(1) for i in range(12)} | {"p.w": torch.zeros(2, 2)}
    mapper = KeyMapper(checkpoint, "p.", name="toy")
    mapper.copy("w", "w")

    with pytest.raises(UserError) as error:
        mapper.finish({"w": torch.Size([3, 2]), "missing.bias": torch.Size([3])})

    message = str(error.value)
    assert "\n" not in message
    assert "12 checkpoint keys not mapped (p.extra0, p.extra1" in message and "and 2 more" in message
    assert "1 target keys missing (missing.bias)" in message
    assert "p.w (2, 2) -> w (3, 2)" in message


def test_finish_reports_unknown_targets():
    mapper = KeyMapper({"w": torch.zeros(1)}, name="toy")
    mapper.copy("w", "typo")
    with pytest.raises(UserError, match=r"1 target keys unknown to the model \(typo\)"):
        mapper.finish({"w": torch.Size([1])})


def test_dropped_keys_count_as_consumed():
    mapper = KeyMapper({"p.head.weight": torch.zeros(1), "p.w": torch.zeros(1)}, "p.", name="toy")
    mapper.drop("head.weight", "unused")
    mapper.copy("w", "w")
    _, consumed = mapper.finish({"w": torch.Size([1])})
    assert consumed == {"p.head.weight", "p.w"}


def test_helpers():
    assert strip_prefix({"a.b": 1, "c.d": 2}, "a.") == {"b": 1}
    assert format_keys(["b", "a"]) == "a, b"
    assert format_keys([str(i) for i in range(5)], limit=2) == "0, 1, ... and 3 more"
