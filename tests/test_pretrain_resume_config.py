"""``--resume`` refuses a changed configuration, but not settings the checkpoint predates."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrain.cli import check_resume_config
from sslcore.errors import ConfigError

SAVED = {"method": "bam", "optim": {"lr": 0.02}, "train": {"out": "a", "epochs": 20}}


def test_changed_setting_is_refused_and_free_keys_are_not() -> None:
    path = Path("run/checkpoint.pth")
    check_resume_config({**SAVED, "train": {"out": "b", "epochs": 20}}, SAVED, path)  # train.out is free
    with pytest.raises(ConfigError, match=r"train\.epochs=12 differs from 20 stored in run/checkpoint\.pth"):
        check_resume_config({**SAVED, "train": {"out": "a", "epochs": 12}}, SAVED, path)
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        check_resume_config({**SAVED, "optim": {}}, SAVED, path)  # a stored key that is gone now differs


def test_settings_added_to_the_schema_after_the_checkpoint_do_not_count() -> None:
    now = {**SAVED, "sere": {"alpha": 1.0}, "optim": {"lr": 0.02, "new_knob": True}}
    check_resume_config(now, SAVED, Path("run/checkpoint.pth"))
