"""`open_state_dict`: Lightning/torch zip and safetensors files, memory mapping, refusing code, bad files."""

from __future__ import annotations

import collections
import io
import os
import pickle
import random
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ccedit.convert.checkpoint import open_state_dict
from ccedit.errors import ModelNotFoundError, UserError


class HyperParameters:
    """An extra of a class the loader cannot know; unpickling it for real would write `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)
        self.learning_rate = 1e-5

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("HyperParameters was imported and restored")
        self.__dict__.update(state)


class RunsShell:
    """Unpickles as `os.system(f"touch {marker}")` (pickled under its real home, `posix.system`)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def global_call(module: str, name: str, argument: str) -> bytes:
    """Protocol-2 pickle opcodes for `module.name(argument)`, whatever the module holds."""
    return b"c" + f"{module}\n{name}\n".encode() + pickle.dumps(argument, protocol=2)[2:-1] + b"\x85R"


def raw_pickle(body: bytes) -> bytes:
    """Wraps opcodes that push one object into a complete protocol-2 pickle."""
    return b"\x80\x02" + body + b"."


def weights() -> collections.OrderedDict[str, torch.Tensor]:
    """A small state dict covering dtypes, a non-contiguous view and two keys sharing one storage."""
    torch.manual_seed(0)
    shared = torch.randn(4, 6)
    return collections.OrderedDict(
        [
            ("first_stage_model.conv.weight", torch.randn(8, 3, 3, 3)),
            ("first_stage_model.conv.bias", torch.randn(8).half()),
            ("model.proj.weight", torch.randn(6, 4).t()),  # non-contiguous
            ("model.emb.weight", torch.randn(5, 2).to(torch.bfloat16)),
            ("conditioner.embedders.0.transformer.position_ids", torch.arange(7).unsqueeze(0)),
            ("first_stage_model.shared.weight", shared),
            ("conditioner.embedders.2.first_stage_model.shared.weight", shared),
            ("denoiser.sigmas", torch.linspace(0.03, 14.6, 10)),
        ]
    )


def lightning_checkpoint(tmp_path: Path, state_dict, **extras) -> Path:
    """Writes a Lightning-style `.ckpt` (torch zip) with `state_dict` and some extras."""
    path = tmp_path / "model.ckpt"
    checkpoint = {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "1.9.0",
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-5}]}],
        "state_dict": state_dict,
        **extras,
    }
    torch.save(checkpoint, path)
    return path


def mapped_regions(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process that map `path`."""
    target = str(path.resolve())
    regions = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            low, high = (int(bound, 16) for bound in fields[0].split("-"))
            regions.append((low, high))
    return regions


def assert_file_backed(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc/self/maps (Linux) to see memory maps")
    regions = mapped_regions(path)
    assert regions, f"{path} is not memory-mapped"
    for key, tensor in state_dict.items():
        address = tensor.data_ptr()
        assert any(low <= address < high for low, high in regions), f"{key} was copied out of the file map"


def assert_one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message


# 1. Reading


def test_lightning_ckpt_returns_state_dict_only(tmp_path):
    expected = weights()
    path = lightning_checkpoint(tmp_path, expected)

    state_dict = open_state_dict(path)

    assert list(state_dict) == list(expected)
    for key, tensor in expected.items():
        assert state_dict[key].dtype == tensor.dtype and state_dict[key].shape == tensor.shape, key
        assert torch.equal(state_dict[key], tensor), key
    # Storage sharing survives, so duplicated modules cost nothing.
    assert (
        state_dict["first_stage_model.shared.weight"].data_ptr()
        == state_dict["conditioner.embedders.2.first_stage_model.shared.weight"].data_ptr()
    )


def test_ckpt_tensors_view_the_memory_mapped_file(tmp_path):
    path = lightning_checkpoint(tmp_path, weights())
    assert_file_backed(path, open_state_dict(path))


def test_safetensors_tensors_view_the_memory_mapped_file(tmp_path):
    expected = {key: tensor.contiguous() for key, tensor in weights().items() if "shared" not in key}
    path = tmp_path / "model.safetensors"
    save_file(expected, path)

    state_dict = open_state_dict(path)

    assert state_dict.keys() == expected.keys()
    assert all(torch.equal(state_dict[key], expected[key]) for key in expected)
    assert_file_backed(path, state_dict)


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_bare_state_dict_is_accepted(tmp_path, suffix):
    # The original loader also takes a file that is just the state dict.
    expected = {"model.proj.weight": torch.randn(3, 2), "model.proj.bias": torch.randn(3)}
    path = tmp_path / f"weights{suffix}"
    torch.save(expected, path)

    state_dict = open_state_dict(path)

    assert state_dict.keys() == expected.keys()
    assert all(torch.equal(state_dict[key], expected[key]) for key in expected)


def test_parameters_are_read_as_tensors(tmp_path):
    path = tmp_path / "params.pt"
    torch.save({"state_dict": {"w": torch.nn.Parameter(torch.randn(2, 2))}}, path)
    state_dict = open_state_dict(path)
    assert type(state_dict["w"]) is torch.Tensor


# 2. Extras are skipped without importing anything; code where the weights should be is refused


def test_unknown_classes_in_extras_are_never_imported(tmp_path):
    marker = tmp_path / "restored"
    expected = weights()
    path = lightning_checkpoint(tmp_path, expected, hyper_parameters=HyperParameters(marker))

    state_dict = open_state_dict(path)

    assert list(state_dict) == list(expected)
    assert not marker.exists()


def test_omegaconf_hyper_parameters_are_skipped(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    config = omegaconf.OmegaConf.create({"model": {"params": {"scale_factor": 0.18215, "layers": [1, 2]}}})
    path = lightning_checkpoint(tmp_path, weights(), hyper_parameters=config)
    assert len(open_state_dict(path)) == len(weights())


def test_code_in_extras_is_inert(tmp_path):
    marker = tmp_path / "pwned"
    path = lightning_checkpoint(tmp_path, weights(), callbacks={"evil": RunsShell(marker)})

    state_dict = open_state_dict(path)

    assert len(state_dict) == len(weights())
    assert not marker.exists()


@pytest.mark.parametrize("where", ["root", "state_dict", "a weight"])
def test_code_where_weights_should_be_is_refused_in_zip(tmp_path, where):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = RunsShell(marker)
    content = {
        "root": payload,
        "state_dict": {"epoch": 1, "state_dict": payload},
        "a weight": {"state_dict": {"w": torch.zeros(2), "b": payload}},
    }[where]
    torch.save(content, path)

    with pytest.raises(UserError, match=r"refusing to load .*: it asks to run code \((posix|nt|os)\.system\)") as error:
        open_state_dict(path)

    assert not marker.exists()
    assert_one_line_naming(error, path)


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval")])
def test_code_in_a_plain_pickle_is_refused(tmp_path, module, name):
    marker = tmp_path / "pwned"
    argument = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w').write('x')"
    path = tmp_path / "evil.pth"
    path.write_bytes(raw_pickle(global_call(module, name, argument)))

    with pytest.raises(UserError, match=rf"refusing to load .*: it asks to run code \({module}\.{name}\)") as error:
        open_state_dict(path)

    assert not marker.exists()
    assert_one_line_naming(error, path)


def test_code_in_a_plain_pickled_lightning_dict_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": RunsShell(marker), "epoch": 1}, protocol=2))

    with pytest.raises(UserError, match="it asks to run code"):
        open_state_dict(path)
    assert not marker.exists()


def test_modules_named_by_the_file_are_never_imported(tmp_path, monkeypatch):
    # A module whose import alone would leave a trace: the loader must not even import it.
    marker = tmp_path / "imported"
    (tmp_path / "ccedit_test_trap.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef run(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    body = b"}(X\x0a\x00\x00\x00state_dict}X\x06\x00\x00\x00extras" + global_call("ccedit_test_trap", "run", "x") + b"u"
    extra_only = tmp_path / "extra.pth"
    extra_only.write_bytes(raw_pickle(body))
    as_weights = tmp_path / "weights.pth"
    as_weights.write_bytes(raw_pickle(global_call("ccedit_test_trap", "run", "x")))

    # The state dict is empty, which is an error of its own, but the extra is inert either way.
    with pytest.raises(UserError, match="holds no tensors"):
        open_state_dict(extra_only)
    with pytest.raises(UserError, match=r"asks to run code \(ccedit_test_trap\.run\)"):
        open_state_dict(as_weights)
    assert not marker.exists()
    assert "ccedit_test_trap" not in sys.modules


def test_zip_with_code_in_an_otherwise_valid_archive_is_refused(tmp_path):
    # Swap data.pkl of a real checkpoint for a payload: the archive stays a valid torch zip.
    marker = tmp_path / "pwned"
    path = lightning_checkpoint(tmp_path, weights())
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    pickle_name = next(name for name in entries if name.endswith("/data.pkl"))
    entries[pickle_name] = raw_pickle(global_call("os", "system", f"touch {marker}"))
    evil = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(evil, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)

    with pytest.raises(UserError, match=r"refusing to load .*: it asks to run code \(os\.system\)"):
        open_state_dict(evil)
    assert not marker.exists()


# 3. Bad files: one UserError line naming the file


def test_missing_file(tmp_path):
    path = tmp_path / "absent.ckpt"
    with pytest.raises(ModelNotFoundError, match="checkpoint not found") as error:
        open_state_dict(path)
    assert isinstance(error.value, UserError)
    assert_one_line_naming(error, path)


def test_truncated_ckpt(tmp_path):
    path = lightning_checkpoint(tmp_path, weights())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated or damaged") as error:
        open_state_dict(path)
    assert_one_line_naming(error, path)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.randn(64, 64), "b": torch.randn(64)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="damaged or truncated safetensors") as error:
        open_state_dict(path)
    assert_one_line_naming(error, path)


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(b"\x00" + random.Random(0).randbytes(4095))
    with pytest.raises(UserError, match="not a checkpoint") as error:
        open_state_dict(path)
    assert_one_line_naming(error, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.ckpt"
    path.touch()
    with pytest.raises(UserError, match="empty") as error:
        open_state_dict(path)
    assert_one_line_naming(error, path)


def test_legacy_torch_format_is_refused(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.randn(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match="legacy") as error:
        open_state_dict(path)
    assert_one_line_naming(error, path)


def test_zip_that_is_not_a_torch_file(tmp_path):
    path = tmp_path / "other.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(UserError, match="not a torch checkpoint") as error:
        open_state_dict(path)
    assert_one_line_naming(error, path)


def test_tensor_reaching_past_its_data_is_refused(tmp_path):
    # A pickle that claims a larger tensor than the bytes stored must not read past them.
    path = lightning_checkpoint(tmp_path, {"w": torch.randn(4)})
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    pickle_name = next(name for name in entries if name.endswith("/data.pkl"))
    # The shape (4,) is pickled as BININT1 4 + TUPLE1; make it 4096 elements instead.
    assert entries[pickle_name].count(b"K\x04\x85") == 1
    entries[pickle_name] = entries[pickle_name].replace(b"K\x04\x85", b"M\x00\x10\x85")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())

    with pytest.raises(UserError, match="damaged") as error:
        open_state_dict(path)
    assert_one_line_naming(error, path)


def test_plain_pickle_of_tensors_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"w": torch.randn(2)}, protocol=2))
    with pytest.raises(UserError, match="plain pickle of tensors") as error:
        open_state_dict(path)
    assert_one_line_naming(error, path)
