"""Offline, a hub id for the model or an annotator fails at once with one line naming the option for a local folder,
whether HF_HUB_OFFLINE is set or the hub simply does not answer."""

from __future__ import annotations

import socket
import time

import pytest

from ccedit import hub
from ccedit.cli import main
from tests.conftest import VIDEOS


@pytest.fixture
def kitten():
    return str(VIDEOS / "kitten.mp4")


@pytest.fixture
def silent_hub(monkeypatch):
    """HF_HUB_OFFLINE unset and the hub's endpoint a local server that accepts connections but never answers."""
    import huggingface_hub.constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read by the library at import
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(hub, "HUB_PROBE_TIMEOUT", 0.5)
    monkeypatch.setattr(hub, "_hub_answers", {})
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _libraries_imported():
    import ccedit.pipelines.loading  # noqa: F401 - so that the timings below measure the failure, not imports


def _edit(kitten, tmp_path, *args) -> tuple[int, float]:
    start = time.perf_counter()
    code = main(["edit", kitten, "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--frames", "2", "--steps", "1",
                 "structure.cache_dir=null", *args])  # fmt: skip
    return code, time.perf_counter() - start


def test_a_silent_hub_counts_as_unreachable_after_a_short_wait(silent_hub):
    start = time.perf_counter()
    assert not hub.is_hub_reachable()
    assert time.perf_counter() - start < 3
    start = time.perf_counter()
    assert not hub.is_hub_reachable()  # asked once per process
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "silent hub"])
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--model", "ccedit-tests/not-cached"], "`ccedit convert CKPT --out ccedit-tests/not-cached`"),
        (["--structure", "lineart"], "structure.options.lineart.model=PATH"),
        (["--structure", "depth"], "structure.options.depth.model=PATH"),
    ],
)
def test_an_uncached_hub_id_fails_at_once_naming_the_option(request, tmp_path, kitten, capsys, monkeypatch, offline,
                                                            args, option):
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        reason = "HF_HUB_OFFLINE is set"
    else:
        request.getfixturevalue("silent_hub")
        reason = "the hub does not answer"
    code, seconds = _edit(kitten, tmp_path, *args)
    assert code == 2
    err = capsys.readouterr().err
    assert "Retrying" not in err and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert option in line and reason in line, line
    # huggingface_hub's retries alone took about 25 s; the bound leaves room for a busy computer
    assert seconds < 20, seconds
    assert not (tmp_path / "o.mp4").exists()
