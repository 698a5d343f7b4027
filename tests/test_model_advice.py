"""A model that is not there gets the advice its name needs: the folder to make, the part's setting, or the
folder that was found instead."""

from __future__ import annotations

import pytest

from ccedit.cli import main
from tests.conftest import REPO
from tests.test_cli_safety import one_error_line

KITTEN = str(REPO / "assets" / "kitten.mp4")


def _edit(tmp_path, *model_args):
    return main(["edit", KITTEN, "--prompt", "x", "--frames", "4", "-o", str(tmp_path / "out" / "o.mp4"), *model_args])


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty working folder and an empty hub cache (HF_HUB_OFFLINE is set for every test)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return work


def test_the_readme_model_name_before_converting_is_told_to_convert_into_it(tmp_path, elsewhere, capsys):
    assert _edit(tmp_path, "--model", "models/ccedit-tvi2v") == 2
    line = one_error_line(capsys)
    assert "`ccedit convert CKPT --out models/ccedit-tvi2v`" in line, line
    (elsewhere / "models").mkdir()  # with its parent folder here, the name can only be a folder
    assert _edit(tmp_path, "--model", "models/ccedit-tvi2v") == 2
    line = one_error_line(capsys)
    assert "folder models/ccedit-tvi2v does not exist" in line and "hf download" not in line, line
    assert "`ccedit convert CKPT --out models/ccedit-tvi2v`" in line, line
    assert not (tmp_path / "out").exists()


def test_the_open_trident_offline_names_the_parts_setting_before_decoding(tmp_path, elsewhere, capsys):
    assert _edit(tmp_path, "--model", "animatediff") == 2
    err = capsys.readouterr().err
    assert "decoding frames" not in err, err
    line = [l for l in err.splitlines() if l.startswith("error:")][-1]
    assert "model.parts.base=DIR" in line and "stable-diffusion-v1-5/stable-diffusion-v1-5" in line, line
    assert "ccedit convert" not in line, line


def test_a_name_that_is_a_package_folder_here_is_not_taken_for_a_model(tmp_path, elsewhere, capsys):
    (elsewhere / "ccedit").mkdir()
    (elsewhere / "ccedit" / "__init__.py").write_text("")
    assert _edit(tmp_path, "--model", "ccedit") == 2
    line = one_error_line(capsys)
    assert f"ccedit is a Python package here ({elsewhere / 'ccedit'}), not a ccedit model folder" in line, line


def test_a_bare_name_that_is_no_folder_lists_the_named_models(tmp_path, elsewhere, capsys):
    assert _edit(tmp_path, "--model", "ccedit") == 2
    line = one_error_line(capsys)
    assert "folder ccedit does not exist" in line and "animatediff" in line, line


def test_models_says_how_to_make_the_readme_model(elsewhere, capsys):
    assert main(["models", "--model", "models/ccedit-tvi2v"]) == 0
    out = capsys.readouterr().out
    assert "make it with `ccedit convert CKPT --out models/ccedit-tvi2v`" in out, out
