"""The edit settings as the command line shows them: every setting's one default in `ccedit edit --help`, and flags
named only by cli.py (the library names settings)."""

import ast
import re
from pathlib import Path

import pytest

from ccedit import cli
from ccedit.config import EditConfig, schema_settings

PACKAGE = Path(cli.__file__).parent


def test_edit_help_lists_every_setting_with_its_one_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["edit", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # the epilog's lines are wrapped
    settings = list(schema_settings())
    assert len(settings) == len({key for key, _, _ in settings}) > 40
    for key, default, help_text in settings:
        assert f" {key} ({cli._shown(default)}): {help_text.split()[0]}" in text, key
    for written in ("video.resize_mode (crop)", "sampling.num_inference_steps (30)", "model.native_frames (16)",
                    "structure.scales ([1.0])", 'sampling.negative_prompt ("ugly, low quality")', "video.fps (null)"):
        assert written in text


def test_every_flag_that_sets_a_setting_names_a_setting_of_the_schema():
    keys = {key for key, _, _ in schema_settings(EditConfig)}
    assert set(cli.SETTING_FLAGS.values()) <= keys
    parsed = cli.build_parser().parse_args(["edit", "in.mp4", "--prompt", "x", "--frames", "3", "--force",
                                            "--structure", "canny,midas", "--structure-scale", "1,0.5"])
    assert cli._flag_overrides(parsed) == {"video": {"num_frames": 3}, "model": {"check_memory": False},
                                           "structure": {"annotators": ["canny", "midas"], "scales": [1.0, 0.5]}}


def _message_strings(tree: ast.AST):
    """The string literals of a module that can reach a user, less docstrings and log calls' format strings."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skipped.add(id(first.value))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "logger"):
            skipped.update(id(arg) for arg in ast.walk(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            yield node.lineno, node.value


def test_the_library_names_settings_not_the_flags_that_set_them():
    flag = re.compile(rf"(?<![\w-])({'|'.join(map(re.escape, cli.SETTING_FLAGS))})(?![\w-])")
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py" and path.parent == PACKAGE:
            continue
        for line, text in _message_strings(ast.parse(path.read_text(encoding="utf-8"))):
            found += [f"{path.relative_to(PACKAGE)}:{line}: {m.group(1)}" for m in flag.finditer(text)]
    assert not found, "messages outside cli.py name flags instead of settings:\n" + "\n".join(found)


@pytest.mark.parametrize("message,expected", [
    ("video.num_frames must be at least 1", "video.num_frames (--frames) must be at least 1"),
    ("or set model.check_memory=false to try", "or set model.check_memory=false (--force) to try"),
    ("invalid YAML in the setting 'video.fps=[1,'", "invalid YAML in the setting 'video.fps=[1,'"),
    ("data.num_frames must be at least 1", "data.num_frames must be at least 1"),
])
def test_cli_names_the_flag_beside_the_setting_a_message_names(message, expected):
    edit = cli.build_parser().parse_args(["edit", "in.mp4", "--prompt", "x"])
    assert cli._naming_flags(message, edit) == expected
    evaluation = cli.build_parser().parse_args(["eval", "eval.yaml"])  # eval has no --frames: nothing added
    assert cli._naming_flags(message, evaluation) == message
