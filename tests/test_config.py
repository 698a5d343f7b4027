"""The one settings loader: any dataclass schema, shipped defaults, user files, flags and `key=value`."""

from dataclasses import dataclass, field

import pytest

from ccedit.config import load_config
from ccedit.errors import UserError


def test_load_config_merges_any_schema_and_names_an_unknown_key(tmp_path):
    @dataclass
    class Inner:
        rate: float = 0.1

    @dataclass
    class Schema:
        name: str = "a"
        inner: Inner = field(default_factory=Inner)

    shipped = tmp_path / "defaults.yaml"
    shipped.write_text("name: b\ninner:\n  rate: 0.2\n")
    user = tmp_path / "user.yaml"
    user.write_text("name: c\n")
    cfg = load_config(Schema, [shipped], [user], {"inner": {"rate": 0.3}}, ["name=d"])
    assert (cfg.name, cfg.inner.rate) == ("d", 0.3)
    assert load_config(Schema, [shipped], [user]).name == "c"
    with pytest.raises(UserError, match=r"`inner.rte`.*\(see here\)"):
        load_config(Schema, dotlist=["inner.rte=1"], hint="here")
    with pytest.raises(UserError, match="config file not found"):
        load_config(Schema, user_files=[tmp_path / "missing.yaml"])


@pytest.mark.parametrize("text", ["password hunter2 is the admin one\n", "- sk-live-12345\n- second\n", "4242\n"])
def test_a_config_file_that_is_not_settings_is_refused_without_showing_its_contents(tmp_path, capsys, text):
    from ccedit.cli import main
    from tests.test_cli_safety import one_error_line

    private = tmp_path / "notes.txt"
    private.write_text(text)
    for command in (["models"], ["edit", "in.mp4", "--prompt", "x"], ["keyframe", "in.mp4"]):
        assert main([*command, "--config", str(private)]) == 2
        line = one_error_line(capsys)
        assert f"config file {private} is not YAML settings" in line, line
        said = line.replace(str(private), "")
        assert not any(word in said for word in text.split() if word not in ("-", "is", "the")), line
    assert main(["eval", str(private)]) == 2
    assert "is not YAML settings" in one_error_line(capsys)


@pytest.mark.parametrize("command", [["models"], ["edit", "in.mp4", "--prompt", "x"], ["keyframe", "in.mp4"],
                                     ["eval", "EVAL"]])
def test_a_setting_into_a_list_element_is_one_line_in_every_command(tmp_path, capsys, command):
    from ccedit.cli import main
    from tests.test_cli_safety import one_error_line

    evaluation = tmp_path / "eval.yaml"
    evaluation.write_text("output: out\n")
    command = [str(evaluation) if part == "EVAL" else part for part in command]
    setting = "methods.0.name=x" if command[0] == "eval" else "structure.annotators.0=canny"
    assert main([*command, setting]) == 2
    line = one_error_line(capsys)
    key = setting.partition("=")[0]
    whole = key.rpartition(".0")[0]
    assert f"cannot set {key}: the list {whole}" in line and "is set whole" in line and f"{whole}=[...]" in line, line


def test_the_names_settings_are_checked_against_are_the_registries():
    import torch

    from ccedit.annotators import ANNOTATORS
    from ccedit.config_checks import ANNOTATOR_NAMES, DTYPE_NAMES, SCHEDULER_NAMES
    from ccedit.pipelines.loading import DTYPES
    from ccedit.schedulers import SCHEDULERS

    assert sorted(ANNOTATOR_NAMES) == sorted(ANNOTATORS)
    assert sorted(SCHEDULER_NAMES) == sorted(SCHEDULERS)
    assert set(DTYPES) == set(DTYPE_NAMES) and all(isinstance(d, torch.dtype) for d in DTYPES.values())


def test_one_structure_scale_setting_applies_to_every_annotator_or_one_each():
    from ccedit.config import load_edit_config
    from ccedit.guidance import structure_scales

    one = load_edit_config(overrides={"structure": {"annotators": ["canny", "canny"], "scales": [0.5]}})
    assert structure_scales(one) == [0.5, 0.5]
    each = load_edit_config(dotlist=["structure.annotators=[canny,canny]", "structure.scales=[1.0,0.25]"])
    assert structure_scales(each) == [1.0, 0.25]
    with pytest.raises(UserError, match="`sampling.structure_scale`"):  # structure.scales is the only one
        load_edit_config(dotlist=["sampling.structure_scale=0.5"])


def test_every_edit_setting_has_one_default_and_model_files_only_change_some():
    import yaml
    from omegaconf import OmegaConf

    from ccedit.config import CONFIG_DIR, EditConfig, ModelConfig, load_edit_config, schema_settings

    settings = {key: default for key, default, help_text in schema_settings(EditConfig) if help_text}
    assert len(settings) == len(list(schema_settings(EditConfig)))  # each with its help beside its default
    assert not list((CONFIG_DIR / "edit").glob("*.yaml"))  # no second file of defaults
    # A model without a file of its own gets the schema's defaults and its kind's conventions (CCEdit's 17 frames),
    # nothing else.
    assert load_edit_config(dotlist=["model.path=models/converted"]) == EditConfig(
        model=ModelConfig(path="models/converted", native_frames=17))
    for path in (CONFIG_DIR / "model").glob("*.yaml"):
        flat = OmegaConf.to_container(OmegaConf.create(yaml.safe_load(path.read_text())))
        for section, values in flat.items():
            for name, value in values.items():
                key = f"{section}.{name}"
                assert key in settings, f"{path.name}: {key} is not a setting"
                assert value != settings[key], f"{path.name}: {key} repeats the schema's default {value!r}"
    # The settings a kind decides default to the default model's kind; any other kind's replace them.
    assert ModelConfig().native_frames == 16 and load_edit_config(model="animatediff-tiny").sampling.scheduler == "ddim"


@pytest.mark.parametrize("key,choices", [
    ("video.resize_mode", "crop, pad"), ("sampling.prior", "auto, none, keyframe, video"),
    ("windows.hierarchical", "auto, true, false"), ("windows.noise", "independent, repeat"),
    ("model.dtype", "auto, float32, float16, bfloat16"),
])
def test_a_name_outside_a_settings_choices_is_one_line_naming_them(key, choices):
    from ccedit.config import load_edit_config

    with pytest.raises(UserError) as refused:
        load_edit_config(dotlist=[f"{key}=sideways"])
    assert str(refused.value) == f"{key} must be one of {choices}, got 'sideways'"


def test_choices_keep_their_strings_in_the_sidecar_and_yaml_and_yaml_booleans_name_them(tmp_path):
    import json

    from ccedit.config import hierarchical_setting, load_edit_config, to_yaml

    cfg = load_edit_config(dotlist=["video.resize_mode=pad", "windows.hierarchical=false", "model.dtype=fp16",
                                    "windows.noise=repeat"])
    assert hierarchical_setting(cfg) is False  # YAML reads `false` as a boolean; the setting takes it as a name
    assert hierarchical_setting(load_edit_config(dotlist=["windows.hierarchical=true"])) is True
    config = json.loads(json.dumps(cfg.to_dict()))
    assert (config["video"]["resize_mode"], config["windows"]["hierarchical"], config["model"]["dtype"],
            config["windows"]["noise"]) == ("pad", "false", "float16", "repeat")
    text = to_yaml(cfg)
    assert "resize_mode: pad" in text and "dtype: float16" in text
    saved = tmp_path / "saved.yaml"
    saved.write_text(text)
    assert load_edit_config([saved]) == cfg  # a written config reads back as the same settings
