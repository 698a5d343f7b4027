"""Annotator weights are loaded weights-only whatever torch's default: a file that would run code is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ccedit.annotators import build_annotator
from ccedit.annotators.edges import LINEART_FILENAMES, SOFTEDGE_FILENAMES
from ccedit.errors import UserError


class RunsCode:
    """Unpickling this calls `Path.touch(marker)`: proof that loading ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def unsafe_torch_load(monkeypatch):
    """`torch.load` as torch 2.4 and 2.5 have it: unpickling anything unless told `weights_only=True`."""
    original = torch.load

    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    return load


# MiDaS and ZoeDepth load through the same `DetectorAnnotator._load_network`; their full-size networks are too slow
# to build here.
@pytest.mark.parametrize(
    ("name", "options", "files"),
    [
        ("lineart", {}, LINEART_FILENAMES),
        ("softedge", {"detector": "hed"}, [SOFTEDGE_FILENAMES["hed"]]),
        ("softedge", {"detector": "pidinet"}, [SOFTEDGE_FILENAMES["pidinet"]]),
    ],
)
def test_a_weight_file_that_would_run_code_is_refused(tmp_path, unsafe_torch_load, name, options, files):
    marker = tmp_path / "code-ran"
    for filename in files:
        torch.save({"weight": RunsCode(marker)}, tmp_path / filename)

    with pytest.raises(UserError) as info:
        build_annotator(name, model=str(tmp_path), **options)
    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message and "would run code" in message and files[0] in message
    assert torch.load is unsafe_torch_load  # the guard is lifted after loading

    # The payload is real: an unguarded load of the same file runs it.
    torch.load(tmp_path / files[0])
    assert marker.exists()


def test_a_damaged_weight_file_is_one_line(tmp_path):
    (tmp_path / SOFTEDGE_FILENAMES["hed"]).write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(UserError, match=r"cannot load the hed soft edge weights: .*ControlNetHED\.pth is unreadable"):
        build_annotator("softedge", model=str(tmp_path), detector="hed")
