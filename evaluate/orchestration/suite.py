"""Evaluation suites for ``sslbench eval full``: which datasets, which protocols with which settings.

A suite is a YAML file (shipped ones in ``evaluate/orchestration/suites/``: ``papers``, ``frozen``, ``shapesworld``)::

    schema: sslbench-suite/v1
    name: frozen                        # the report directory: reports/<name>/
    machine: "1 node, 8x A100 80GB"     # what the ``hours`` estimates refer to
    datasets:                           # key -> where and what
      imagenet: {kind: imagenet, root: imagenet}          # registry name: its official layout and splits
      shapes: {kind: imagefolder, root: classification}   # any <root>/<split>/<class>/<image> tree
      davis: {kind: davis, root: davis-2017}              # davis | coco | ade20k | voc | imagenet-s
    protocols:
      - protocol: knn                   # knn | linear | logreg | cluster | finetune | davis | coco | ade20k | voc | imagenet-s
        dataset: imagenet               # a key of ``datasets``
        id: knn                         # unique; default: the protocol name
        settings: {ks: [10, 20]}        # differences from the protocol's defaults (its config keys)
        family_settings:                # over ``settings`` for checkpoints of one backbone family (resnet, metaformer)
          resnet: {lr: 0.3}             # (a paper's protocol for that family; ``--set`` still wins)
        recipe: deit_bam                # finetune only: a recipe of evaluate/protocols/finetune/recipes (settings apply on top;
                                        # none: the schema's defaults, DeiT's)
        optional: false                 # true: an opt-in, run only when --only names it
        gpus: 8                         # GPUs the job asks for (Slurm), processes for dense tasks
        hours: 1.5                      # estimated wall hours per checkpoint on ``machine`` (the plan's cost column)

A root that is relative is taken under ``--data-root``; ``$VAR`` / ``${VAR}`` are expanded; ``--root KEY=PATH``
overrides one dataset's root. Everything is checked when the suite is loaded (:func:`load_suite`, unknown keys,
protocols, datasets, kinds, protocol settings) and the roots of the selected protocols when they are resolved
(:func:`resolve_roots`): a bad suite fails with one line naming the file and key, before any work.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any

import yaml

from sslcore.config import from_dict
from sslcore.errors import ConfigError, SSLBenchError

SCHEMA = "sslbench-suite/v1"
SUITES_DIR = Path(__file__).resolve().parent / "suites"
DENSE_KINDS = ("coco", "ade20k", "voc", "imagenet-s")
# protocol -> (module, config class); the frozen-feature protocols and fine-tuning share evalrun's sections
FROZEN = {
    "knn": ("evaluate.protocols.knn", "KNNConfig"),
    "linear": ("evaluate.protocols.linear", "LinearConfig"),
    "logreg": ("evaluate.protocols.logreg", "LogRegConfig"),
    "cluster": ("evaluate.protocols.cluster", "ClusterConfig"),
    "finetune": ("evaluate.protocols.finetune.config", "FinetuneConfig"),
}
PROTOCOLS = (*FROZEN, "davis", *DENSE_KINDS)
# keys of the protocol configs that the graph sets itself (from the checkpoint, the dataset entry, the run dir)
RESERVED = ("backbone", "out", "data.root", "data.name", "checkpoint", "davis_root", "format", "which", "name")


@dataclasses.dataclass
class SuiteDataset:
    kind: str  # a registry name (imagenet, food101, ...), imagefolder, davis, coco, ade20k, voc, imagenet-s
    root: str = ""
    name: str | None = None  # imagefolder: the record's dataset name (default: read off the root)
    check_counts: bool = True  # registry datasets: class and image counts against the official release


@dataclasses.dataclass
class SuiteProtocol:
    protocol: str
    dataset: str
    id: str | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    recipe: str | None = None
    optional: bool = False
    gpus: int = 1
    hours: float | None = None
    family_settings: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from pretrain.pooled import FAMILIES

        bad = [f for f, v in self.family_settings.items() if f not in FAMILIES or not isinstance(v, dict)]
        if bad:
            raise ValueError(f"family_settings: {bad[0]!r}: expected one of {', '.join(FAMILIES)} -> a mapping")
        if self.gpus < 1:
            raise ValueError(f"gpus={self.gpus}: must be >= 1")
        if self.hours is not None and self.hours < 0:
            raise ValueError(f"hours={self.hours}: must be >= 0")


@dataclasses.dataclass
class DenseSettings:
    """``settings`` of a dense protocol (``evaluate.protocols.dense.runner.run_eval``)."""

    config: str | None = None  # a name under downstream_configs/ or a path; None: the task's default for the arch
    cfg_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    amp: bool = False


@dataclasses.dataclass
class Suite:
    name: str
    datasets: dict[str, SuiteDataset]
    protocols: list[SuiteProtocol]
    schema: str = SCHEMA
    machine: str = ""
    description: str = ""
    path: str = ""  # set by load_suite

    def entry(self, job_id: str) -> SuiteProtocol:
        return next(p for p in self.protocols if p.id == job_id)


def dataset_kinds() -> tuple[str, ...]:
    from evaluate.datasets import DATASETS

    return (*DATASETS, "imagefolder", "davis", *DENSE_KINDS)


def accepts(protocol: str, kind: str) -> bool:
    """Whether ``protocol`` runs on a dataset of ``kind``."""
    if protocol in FROZEN:
        return kind not in ("davis", *DENSE_KINDS)
    return kind == protocol


def suite_path(name: str | Path) -> Path:
    """A suite given as a path, or by name from ``evaluate/orchestration/suites/`` (``papers``, ``papers.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (SUITES_DIR / path.name, SUITES_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
    raise ConfigError(f"--suite {name}: neither a file nor a shipped suite ({known})")


def protocol_schema(protocol: str) -> type:
    if protocol in FROZEN:
        module, cls = FROZEN[protocol]
        return getattr(importlib.import_module(module), cls)
    if protocol == "davis":
        from evaluate.protocols.davis.run import DavisConfig

        return DavisConfig
    return DenseSettings


def _dotted(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        out.append(f"{prefix}{key}")
        if isinstance(value, dict) and key != "cfg_options":
            out += _dotted(value, f"{prefix}{key}.")
    return out


def base_config(entry: SuiteProtocol, where: str, family: str | None = None) -> Any:
    """The protocol config of ``entry`` before the graph fills in checkpoint, data root and output: the recipe
    (finetune) and the entry's settings over the protocol's defaults, and for a checkpoint of backbone ``family``
    (a CNN / MetaFormer; None: a ViT) its ``family_settings`` over those. Raises ConfigError naming ``where``."""
    from sslcore.config import _deep_merge

    schema = protocol_schema(entry.protocol)
    settings, key_of = entry.settings, "settings"
    if family in entry.family_settings:
        settings, key_of = _deep_merge(entry.settings, entry.family_settings[family]), f"family_settings.{family}"
    for key in _dotted(settings):
        if key in RESERVED:
            raise ConfigError(f"{where}.{key_of}.{key}: set by the suite's dataset and the checkpoint, not here")
    base = None
    if entry.protocol == "finetune" and entry.recipe:
        from evaluate.protocols.finetune.run import resolve_recipe
        from sslcore.config import load_config

        try:
            recipe = resolve_recipe(entry.recipe)
        except SSLBenchError as exc:
            raise ConfigError(f"{where}.recipe: {exc}") from None
        base = load_config(schema, recipe)
    elif entry.recipe:
        raise ConfigError(f"{where}.recipe: only finetune takes a recipe")
    try:
        return from_dict(schema, settings, f"{where}.{key_of}", base)
    except ValueError as exc:  # a __post_init__ check outside sslcore.config's validate()
        raise ConfigError(f"{where}.{key_of}: {exc}") from None


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite (see the module docstring); raises ConfigError naming the file and key."""
    path = suite_path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the suite ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data.pop("path", None)
    suite = from_dict(Suite, data, str(path))
    suite.path = str(path)
    if suite.schema != SCHEMA:
        raise ConfigError(f"{path}: schema: expected {SCHEMA!r}, got {suite.schema!r}")
    if not suite.protocols:
        raise ConfigError(f"{path}: protocols: the suite lists no protocol")
    kinds = dataset_kinds()
    for key, ds in suite.datasets.items():
        if ds.kind not in kinds:
            raise ConfigError(f"{path}: datasets.{key}.kind: unknown kind {ds.kind!r} (valid: {', '.join(kinds)})")
    seen: set[str] = set()
    for i, entry in enumerate(suite.protocols):
        where = f"{path}: protocols.{i}"
        if entry.protocol not in PROTOCOLS:
            raise ConfigError(f"{where}.protocol: unknown protocol {entry.protocol!r} (valid: {', '.join(PROTOCOLS)})")
        if entry.dataset not in suite.datasets:
            raise ConfigError(
                f"{where}.dataset: unknown dataset {entry.dataset!r} (the suite's: {', '.join(suite.datasets)})"
            )
        kind = suite.datasets[entry.dataset].kind
        if not accepts(entry.protocol, kind):
            raise ConfigError(f"{where}.dataset: {entry.protocol} does not run on a dataset of kind {kind!r}")
        entry.id = entry.id or entry.protocol
        if entry.id in seen or "/" in entry.id:
            raise ConfigError(f"{where}.id: {entry.id!r} is used twice or contains '/' (ids must be unique names)")
        seen.add(entry.id)
        for family in (None, *entry.family_settings):
            base_config(entry, where, family)
    return suite


def apply_settings(suite: Suite, settings: dict[str, dict[str, Any]] | list[str] | None) -> Suite:
    """Merge per-entry settings into the suite and check them again: ``{id or protocol: {key: value}}`` or the
    command line's ``["ID.KEY=VALUE", ...]`` (``--set linear.epochs=10``); a protocol name applies to each of its
    entries. Raises ConfigError naming the entry and key."""
    from sslcore.config import _deep_merge, parse_overrides

    if not settings:
        return suite
    tree = parse_overrides(list(settings)) if isinstance(settings, list) else settings
    for name, values in tree.items():
        targets = [p for p in suite.protocols if name in (p.id, p.protocol)]
        if not targets or not isinstance(values, dict):
            ids = ", ".join(p.id or p.protocol for p in suite.protocols)
            raise ConfigError(f"--set {name}: expected ID.KEY=VALUE with an id or protocol of {suite.path} ({ids})")
        for entry in targets:
            entry.settings = _deep_merge(entry.settings, values)
            for family, over in entry.family_settings.items():  # an explicit --set wins over a family's default
                entry.family_settings[family] = _drop_keys(over, values)
            for family in (None, *entry.family_settings):
                base_config(entry, f"{suite.path}: protocols.{entry.id} (with --set)", family)
    return suite


def _drop_keys(tree: dict[str, Any], drop: dict[str, Any]) -> dict[str, Any]:
    """``tree`` without the leaves that ``drop`` sets (nested mappings compared key by key)."""
    out = {}
    for key, value in tree.items():
        if key not in drop:
            out[key] = value
        elif isinstance(value, dict) and isinstance(drop[key], dict):
            out[key] = _drop_keys(value, drop[key])
    return out


def select(suite: Suite, only: list[str] | None = None, skip: list[str] | None = None) -> list[SuiteProtocol]:
    """The entries to run: ``only`` minus ``skip``; without ``only``, every entry that is not an opt-in. In ``only`` a
    protocol name selects that protocol's default entries and an id its entry, so an opt-in runs only when its id is
    named (``--only ade20k`` is the tiny UperNet of the shapesworld suite, not also its 2,000-iteration
    ``ade20k-tiny``). ``skip`` drops entries by id or protocol. An unknown name, or a protocol name whose entries are
    all opt-ins, raises ConfigError."""
    names = {p.id for p in suite.protocols} | {p.protocol for p in suite.protocols}
    for flag, given in (("--only", only), ("--skip", skip)):
        for name in given or []:
            if name not in names:
                raise ConfigError(f"{flag} {name}: not a protocol or id of {suite.path} ({', '.join(sorted(names))})")
    if not only:
        chosen = [p for p in suite.protocols if not p.optional]
    else:
        chosen = [p for p in suite.protocols if p.id in only or (p.protocol in only and not p.optional)]
        for name in only:
            if not any(name in (p.id, p.protocol) for p in chosen):
                ids = ", ".join(p.id for p in suite.protocols if p.protocol == name)
                raise ConfigError(
                    f"--only {name}: every {name} entry of {suite.path} is an opt-in; name it by id ({ids})"
                )
    return [p for p in chosen if not skip or (p.id not in skip and p.protocol not in skip)]


def resolve_roots(
    suite: Suite, entries: list[SuiteProtocol], data_root: str | None = None, roots: dict[str, str] | None = None
) -> dict[str, str]:
    """The absolute root of every dataset the ``entries`` use; each must be a directory (ConfigError otherwise)."""
    roots = dict(roots or {})
    for key in roots:
        if key not in suite.datasets:
            raise ConfigError(f"--root {key}=...: not a dataset of {suite.path} ({', '.join(suite.datasets)})")
    out: dict[str, str] = {}
    for key in dict.fromkeys(e.dataset for e in entries):
        raw = os.path.expandvars(roots.get(key) or suite.datasets[key].root)
        if not raw or "$" in raw:
            raise ConfigError(
                f"{suite.path}: datasets.{key}.root: not set ({raw or 'empty'}); give --root {key}=PATH or --data-root"
            )
        path = Path(raw).expanduser()
        if not path.is_absolute():
            if data_root is None and key not in roots:
                raise ConfigError(
                    f"{suite.path}: datasets.{key}.root={raw}: relative; give --data-root DIR or --root {key}=PATH"
                )
            path = (Path(data_root) / path) if key not in roots else path
        if not path.is_dir():
            raise ConfigError(f"datasets.{key}.root={path}: not a directory")
        out[key] = str(path.resolve())
    return out
