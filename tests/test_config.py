from __future__ import annotations

import dataclasses
from typing import Literal

import pytest
import yaml

from sslcore.config import load_config, parse_overrides, save_config, to_dict
from sslcore.errors import ConfigError


@dataclasses.dataclass
class Optim:
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    name: Literal["adamw", "sgd"] = "adamw"


@dataclasses.dataclass
class Cfg:
    epochs: int = 10
    out: str = "runs/x"
    teacher: bool = True
    crops: list[int] = dataclasses.field(default_factory=lambda: [2, 6])
    min_lr: float | None = None
    optim: Optim = dataclasses.field(default_factory=Optim)


def test_defaults_yaml_and_overrides_layer(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("epochs: 3\noptim:\n  lr: 1.0e-3\n")
    cfg = load_config(Cfg, path, ["optim.name=sgd", "crops=[2, 10]", "min_lr=1e-6", "epochs=7"])
    assert cfg.epochs == 7 and cfg.crops == [2, 10] and cfg.min_lr == 1e-6
    assert cfg.optim == Optim(lr=1e-3, betas=(0.9, 0.999), name="sgd")
    assert cfg.out == "runs/x" and cfg.teacher is True


def test_yaml_float_without_dot_is_a_number(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("optim:\n  lr: 1e-3\n")  # YAML 1.1 reads this as a string
    assert load_config(Cfg, path).optim.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("optim:\n  lrr: 1\n", "x.yaml: optim.lrr: unknown key"),
        ("epochs: 2.5\n", "x.yaml: epochs: expected an integer, got 2.5"),
        ("optim:\n  name: lamb\n", "x.yaml: optim.name: expected one of ['adamw', 'sgd']"),
        ("teacher: 3\n", "x.yaml: teacher: expected true/false"),
        ("optim:\n  betas: [0.9]\n", "x.yaml: optim.betas: expected 2 items"),
        ("- 1\n- 2\n", "expected a mapping at the top level"),
        ("epochs: [1\n", "invalid YAML"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path, yaml_text, message):
    path = tmp_path / "x.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(Cfg, path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_overrides_are_named():
    with pytest.raises(ConfigError, match="override: optim.momentum: unknown key"):
        load_config(Cfg, None, ["optim.momentum=0.9"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(Cfg, None, ["epochs"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Cfg, "/nonexistent/cfg.yaml")


def test_parse_overrides_types():
    assert parse_overrides(["a.b=1", "a.c=true", "d=[1, 2]", "e=hello", "f=1e-4"]) == {
        "a": {"b": 1, "c": True},
        "d": [1, 2],
        "e": "hello",
        "f": 1e-4,
    }


def test_save_roundtrip(tmp_path):
    cfg = load_config(Cfg, None, ["optim.lr=0.1"])
    path = save_config(cfg, tmp_path / "resolved.yaml")
    data = yaml.safe_load(path.read_text())
    assert data == to_dict(cfg) and data["optim"]["betas"] == [0.9, 0.999]
    assert load_config(Cfg, path) == cfg
