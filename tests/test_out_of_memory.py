"""Memory that runs out is said as such, in one line with what reduces the need, never as a damaged file; and an
image whose header declares an enormous size is refused in one line before it is decoded."""

from __future__ import annotations

import errno
import struct
import zlib

import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors import SafetensorError

from ccedit.cli import main
from ccedit.errors import UserError
from ccedit.io import read_image
from ccedit.pipelines import model_folders
from tests.conftest import REPO
from tests.test_cli_safety import one_error_line

KITTEN = str(REPO / "assets" / "kitten.mp4")

ALLOCATION_FAILURES = {
    "cpu allocator": RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                                  "you tried to allocate 1073741824 bytes."),
    "cuda": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "python": MemoryError(),
    "safetensors mmap": SafetensorError("Error while deserializing header: Cannot allocate memory (os error 12)"),
    "enomem": OSError(errno.ENOMEM, "Cannot allocate memory"),
}


@pytest.mark.parametrize("failure", list(ALLOCATION_FAILURES), ids=list(ALLOCATION_FAILURES))
def test_a_model_that_does_not_fit_in_memory_is_not_called_damaged(tmp_path, monkeypatch, failure):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"fine weights")

    def allocation_fails(*args, **kwargs):
        raise ALLOCATION_FAILURES[failure]

    monkeypatch.setattr(AutoencoderKL, "from_pretrained", allocation_fails)
    with pytest.raises(UserError) as raised:
        model_folders.load_component(AutoencoderKL, str(tmp_path), "vae", "VAE")
    line = str(raised.value)
    assert line.startswith("out of ") and "loading the VAE from" in line, line
    assert "model.dtype=float16" in line, line  # what reduces the need
    assert "unreadable" not in line and "replace it" not in line and "convert" not in line, line
    assert "\n" not in line


def test_an_image_that_does_not_fit_in_memory_is_not_called_incomplete(tmp_path, monkeypatch):
    image = tmp_path / "k.png"
    Image.new("RGB", (8, 8)).save(image)

    def allocation_fails(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(Image.Image, "load", allocation_fails)
    with pytest.raises(UserError) as raised:
        read_image(image)
    assert str(raised.value).startswith(f"out of memory reading image {image}"), raised.value


def _png_header_only(path, width: int, height: int) -> None:
    """A 1-bit PNG that declares `width` x `height` pixels (a decompression bomb's header), with no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


def test_a_keyframe_declaring_enormous_dimensions_is_one_line(tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 40000, 40000)
    out = tmp_path / "o.mp4"
    assert main(["edit", KITTEN, "--prompt", "x", "--frames", "2", "--keyframe", f"{bomb}@0", "-o", str(out),
                 "structure.cache_dir=null"]) == 2
    line = one_error_line(capsys)
    assert f"image {bomb} declares too many pixels" in line, line
    assert not out.exists()


def test_a_frame_folder_with_an_enormous_frame_is_one_line(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    _png_header_only(frames / "0001.png", 40000, 40000)
    assert main(["keyframe", str(frames), "-o", str(tmp_path / "k.png")]) == 2
    assert "declares too many pixels" in one_error_line(capsys)


def test_keyframe_output_in_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["keyframe", KITTEN, "-o", str(locked / "k.png")]) == 2
        assert "cannot write in" in one_error_line(capsys)
    finally:
        locked.chmod(0o755)
