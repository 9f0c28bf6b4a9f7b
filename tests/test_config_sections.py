"""Issue 17 item 1: a dotted override of one key of a nested section changes that key and nothing else.

Before the fix, ``features.progress=false`` rebuilt the whole ``features`` section from ``FeatureConfig``'s own
defaults, so logreg's ``resize_ratio=1.0`` (Kornblith / DINOv2) silently became 256/224.
"""

from __future__ import annotations

import dataclasses

import pytest

from sslcore.config import load_config, to_dict


def _schemas():
    from evaluate.protocols.cluster import ClusterConfig
    from evaluate.protocols.davis.run import DavisConfig
    from evaluate.protocols.knn import KNNConfig
    from evaluate.protocols.linear import LinearConfig
    from evaluate.protocols.logreg import LogRegConfig
    from pretrain.config import PretrainConfig

    return [KNNConfig, LinearConfig, LogRegConfig, ClusterConfig, DavisConfig, PretrainConfig]


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _flip(value):
    """A different value of the same type (None when there is no obvious one)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 if value else 0.5
    return None


def test_logreg_feature_override_keeps_the_protocol_transform():
    from evaluate.protocols.logreg import LogRegConfig

    cfg = load_config(LogRegConfig, None, ["features.progress=false"])
    assert cfg.features.resize_ratio == pytest.approx(1.0)
    assert cfg.features.progress is False
    assert load_config(LogRegConfig, None, ["features.num_workers=3"]).features.resize_ratio == pytest.approx(1.0)


def test_yaml_section_keeps_the_parent_default(tmp_path):
    from evaluate.protocols.logreg import LogRegConfig

    path = tmp_path / "x.yaml"
    path.write_text("features:\n  num_workers: 2\n")
    cfg = load_config(LogRegConfig, path)
    assert cfg.features.resize_ratio == pytest.approx(1.0) and cfg.features.num_workers == 2


@pytest.mark.parametrize("schema", _schemas(), ids=lambda s: s.__name__)
def test_one_override_changes_exactly_one_key(schema):
    base = to_dict(schema())
    checked = 0
    for key, value in _leaves(base):
        new = _flip(value)
        if new is None:
            continue
        try:
            cfg = load_config(schema, None, [f"{key}={str(new).lower() if isinstance(new, bool) else new}"])
        except Exception:  # the flipped value is out of range for this key (validated): not this test's concern
            continue
        got = dict(_leaves(to_dict(cfg)))
        changed = {k for k, v in got.items() if v != dict(_leaves(base)).get(k)}
        assert changed == {key}, f"{schema.__name__}: {key} changed {sorted(changed)}"
        checked += 1
    assert checked >= 3


def test_partial_section_equals_replace_of_the_default():
    from evaluate.protocols.logreg import LogRegConfig

    cfg = load_config(LogRegConfig, None, ["features.batch_size=7", "data.name=x"])
    want = LogRegConfig()
    want = dataclasses.replace(
        want, features=dataclasses.replace(want.features, batch_size=7), data=dataclasses.replace(want.data, name="x")
    )
    assert to_dict(cfg) == to_dict(want)
