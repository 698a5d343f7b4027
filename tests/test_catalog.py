"""`ccedit models`: where each part of the configured model comes from, without loading anything."""

from ccedit.cli import main


def test_models_lists_each_part_and_where_it_comes_from(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    (tmp_path / "motion").mkdir()
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"")
    assert main(["models", "--model", "animatediff", f"model.parts.motion_adapter={tmp_path / 'motion'}",
                 f"model.lora=[{{path: {lora}, scale: 0.5}}]"]) == 0
    out = capsys.readouterr().out
    assert "AnimateDiff motion modules" in out and f"{tmp_path / 'motion'}  [local folder]" in out
    assert "hf download guoyww/animatediff-sparsectrl-rgb" in out  # a hub id not yet fetched
    assert "LoRA (scale 0.5)" in out and "[local file]" in out
    assert main(["models", "--model", str(tmp_path / "converted")]) == 0
    assert "CCEdit temporal layers" in capsys.readouterr().out
    assert main(["models"]) == 0
    assert "built in" in capsys.readouterr().out
