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
