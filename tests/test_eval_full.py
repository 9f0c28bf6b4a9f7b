"""``sslbench eval full`` (issue 16): suite checks, the job graph on ShapesWorld with two checkpoints, resume after
SIGKILL, failures that do not stop independent jobs, submitit's debug executor == local, the report."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evaluate.cli import main
from evaluate.orchestration.full import run_full
from evaluate.orchestration.suite import SUITES_DIR, load_suite, select
from evaluate.protocols import features as features_module
from evaluate.reporting.records import read_records
from sslcore.errors import ConfigError, SSLBenchError

REPO = Path(__file__).resolve().parent.parent

# The shapesworld suite's protocols at test sizes (a few seconds per checkpoint on one CPU core).
TINY_SUITE = """
schema: sslbench-suite/v1
name: tiny
machine: "1 CPU core"
datasets:
  classification: {kind: imagefolder, root: classification}
  transfer: {kind: imagefolder, root: transfer, name: shapesworld-transfer}
  davis: {kind: davis, root: davis}
protocols:
  - {protocol: knn, dataset: classification, hours: 0.001}
  - {protocol: linear, dataset: classification, settings: {mode: cached, epochs: 3, batch_size: 64}}
  - {protocol: logreg, id: logreg-transfer, dataset: transfer, settings: {num_lambdas: 3, max_iter: 100}}
  - protocol: logreg
    id: logreg-1pct
    dataset: classification
    settings: {data: {subset: 10percent}, num_lambdas: 3, max_iter: 100, l2_normalize: true}
  - {protocol: cluster, dataset: classification, settings: {num_classes: [4, 6], instances: 2, n_init: 2}}
  - {protocol: davis, dataset: davis, settings: {short_side: 48}}
"""
EXPECTED = {
    ("knn", "shapesworld"),
    ("linear", "shapesworld"),
    ("logreg", "shapesworld-transfer"),
    ("logreg", "shapesworld-10pct"),
    ("cluster", "shapesworld"),
    ("davis", "shapesworld-davis"),
}


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _checkpoints(folder: Path) -> dict[str, Path]:
    from pretrain.vit import build_vit, export_backbone

    out = {}
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        out[name] = folder / f"{name}.pt"
        torch.save(export_backbone(build_vit("vit_femto")), out[name])
    return out


def _values(records: list[dict]) -> dict[tuple, float]:
    """(checkpoint, protocol, dataset, metric, C) -> value of the measured records."""
    return {
        (
            r["checkpoint"]["name"],
            r["protocol"],
            r["dataset"],
            r["metric"],
            r["settings"].get("num_classes") if r["protocol"] == "cluster" else None,
        ): r["value"]
        for r in records
    }


class _Counter:
    """Counts extract_features calls by (checkpoint sha256, image list, transform, taps)."""

    def __init__(self) -> None:
        self.calls: collections.Counter = collections.Counter()
        self.real = features_module.extract_features

    def __call__(self, model, images, transform, cfg):
        from evaluate.datasets import fingerprint

        size = [t.size for t in transform.transforms if hasattr(t, "size")]
        key = (features_module.model_sha256(model), fingerprint(images), repr(size), cfg.taps, cfg.n_last)
        self.calls[key] += 1
        return self.real(model, images, transform, cfg)


@pytest.fixture(scope="module")
def world(tmp_path_factory, shapes_root):
    """The tiny suite run once, uninterrupted, on two checkpoints, counting feature extractions."""
    base = tmp_path_factory.mktemp("full")
    suite = base / "tiny.yaml"
    suite.write_text(TINY_SUITE)
    ckpts = _checkpoints(base)
    counter = _Counter()
    store, cache = base / "records", base / "cache"
    with _env(SSLBENCH_RESULTS=str(store), SSLBENCH_CACHE=str(cache)), pytest.MonkeyPatch.context() as mp:
        mp.setattr(features_module, "extract_features", counter)
        first = run_full(ckpts, suite, base / "out", report=base / "report", data_root=shapes_root, figures=False)
        records = read_records(store)
        again = run_full(ckpts, suite, base / "out", report=base / "report", data_root=shapes_root, figures=False)
        records_again = read_records(store)
    return {
        "base": base,
        "suite": suite,
        "ckpts": ckpts,
        "counter": counter,
        "first": first,
        "again": again,
        "records": records,
        "records_again": records_again,
        "store": store,
        "cache": cache,
    }


# ------------------------------------------------------------------------------------------------- the suite
def test_shipped_suites_load_and_select():
    for name in ("papers", "frozen", "shapesworld"):
        suite = load_suite(name)
        assert suite.name == name and suite.protocols
    papers = load_suite(SUITES_DIR / "papers.yaml")
    default = {p.id for p in select(papers)}
    assert {"knn", "linear", "logreg-1pct", "cluster", "davis", "coco", "ade20k", "finetune-deit"} <= default
    assert "voc" not in default and "imagenet-s" not in default  # opt-ins
    assert {p.id for p in select(papers, only=["voc", "knn"])} == {"voc", "knn"}
    assert "coco" not in {p.id for p in select(papers, skip=["coco"])}
    with pytest.raises(ConfigError, match="--only nope"):
        select(papers, only=["nope"])
    # an opt-in runs only when its id is named: a protocol name selects that protocol's default entries
    assert [p.id for p in select(papers, only=["ade20k"])] == ["ade20k"]
    assert {p.id for p in select(papers, only=["ade20k", "ade20k-semfpn"])} == {"ade20k", "ade20k-semfpn"}
    shapes = load_suite("shapesworld")
    assert [p.id for p in select(shapes, only=["ade20k"])] == ["ade20k"]
    assert [p.id for p in select(shapes, only=["ade20k-tiny"])] == ["ade20k-tiny"]
    assert [p.id for p in select(shapes, only=["logreg"])] == ["logreg-transfer", "logreg-1pct", "logreg-10pct"]


def test_a_protocol_whose_entries_are_all_opt_ins_must_be_named_by_id(tmp_path):
    suite_file = tmp_path / "optin.yaml"
    suite_file.write_text(TINY_SUITE + "  - {protocol: davis, id: davis-48, dataset: davis, optional: true}\n")
    suite_file.write_text(
        suite_file.read_text().replace("  - {protocol: davis, dataset: davis, settings: {short_side: 48}}\n", "")
    )
    suite = load_suite(suite_file)
    with pytest.raises(
        ConfigError, match=r"--only davis: every davis entry .* is an opt-in; name it by id \(davis-48\)"
    ):
        select(suite, only=["davis"])
    assert [p.id for p in select(suite, only=["davis-48"])] == ["davis-48"]


def test_every_dense_job_of_the_papers_suite_asks_for_its_protocols_total_batch():
    """gpus x the config's per-process batch = the protocol's total batch (``auto_scale_lr.base_batch_size``): the
    dense runner keeps the config's lr, so 8 GPUs on a 4-GPU protocol would train at twice its batch (ViT-S configs,
    the suite's architecture)."""
    pytest.importorskip("mmengine")
    from evaluate.protocols.dense.runner import CONFIG_DIR, TASKS, load_mm_config

    dense = [p for p in load_suite(SUITES_DIR / "papers.yaml").protocols if p.protocol in TASKS]
    assert len(dense) >= 6
    for entry in dense:
        name = entry.settings.get("config") or TASKS[entry.protocol]["configs"]["vit_small"]
        cfg = load_mm_config(CONFIG_DIR / f"{name}.py")
        total = entry.gpus * cfg.train_dataloader.batch_size
        assert total == cfg.auto_scale_lr.base_batch_size, (entry.id, entry.gpus, total)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("{protocol: knn,", "{protocol: knnn,"), "protocols.0.protocol: unknown protocol 'knnn'"),
        (("{protocol: knn, dataset: classification", "{protocol: knn, dataset: imagenet"), "unknown dataset"),
        (
            ("settings: {mode: cached,", "settings: {mode: cached, epochz: 3,"),
            "protocols.1.settings: epochz: unknown key",
        ),
        (("kind: davis", "kind: davys"), "datasets.davis.kind: unknown kind 'davys'"),
        (("{protocol: knn, dataset: classification", "{protocol: knn, dataset: davis"), "does not run on"),
        (("settings: {mode: cached,", "settings: {out: x, mode: cached,"), "settings.out: set by the suite"),
    ],
)
def test_bad_suite_is_one_line_exit_2_before_any_work(tmp_path, capsys, shapes_root, edit, message):
    suite = tmp_path / "bad.yaml"
    suite.write_text(TINY_SUITE.replace(*edit, 1))
    out = tmp_path / "out"
    code = main(["eval", "full", str(tmp_path / "missing.pt"), "--suite", str(suite), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_missing_root_and_checkpoint_fail_before_any_work(tmp_path, capsys, shapes_root):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY_SUITE)
    ckpt = _checkpoints(tmp_path)["a"]
    args = ["eval", "full", str(ckpt), "--suite", str(suite), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "relative; give --data-root" in capsys.readouterr().err
    assert main([*args, "--data-root", str(shapes_root), "--root", "davis=/no/such/dir"]) == 2
    assert "datasets.davis.root=/no/such/dir: not a directory" in capsys.readouterr().err
    assert main([*args[:2], str(tmp_path / "nope.pt"), *args[3:], "--data-root", str(shapes_root)]) == 2
    assert "nope.pt: checkpoint file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "records").exists()


def test_loading_a_model_joins_no_process_group(femto_file, monkeypatch):
    import torch.distributed as dist

    from evaluate.protocols import evalrun

    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun: loading alone must not try to join
    model, info = evalrun.load_model(evalrun.BackboneConfig(path=str(femto_file)))
    assert info["sha256"] and not dist.is_initialized()


# ------------------------------------------------------------------------------------------------- the graph
@pytest.mark.slow
def test_graph_extracts_each_image_list_once_and_records_every_protocol(world):
    first = world["first"]
    assert set(first.outcome.values()) == {"ran"}, first.outcome
    calls = world["counter"].calls
    assert calls and max(calls.values()) == 1, calls  # no (checkpoint, images, transform, taps) extracted twice
    # per checkpoint, 4 feature jobs = (dataset, transform, taps): classification at 256/224 with the CLS (k-NN's
    # train + val, clustering's val: 2 lists), classification with the last 2 CLS (linear: train + val: 2),
    # transfer at 1.0 (logreg: train + val: 2), classification at 1.0 (logreg on the 10 % list: the subset, the
    # images outside it, val: 3) -> 9 extractions per checkpoint, each once, all inside the feature jobs
    feature_jobs = [j for j in first.graph.jobs if j.kind == "features"]
    assert len(feature_jobs) == 8
    per_ckpt = collections.Counter(key[0] for key in calls)
    assert sorted(per_ckpt.values()) == [9, 9]
    records = world["records"]
    for name in ("a", "b"):
        done = {(r["protocol"], r["dataset"]) for r in records if r["checkpoint"]["name"] == name}
        assert done == EXPECTED, name
    cluster = {r["settings"]["num_classes"] for r in records if r["protocol"] == "cluster"}
    assert cluster == {4, 6}
    for r in records:
        assert r["settings"]["job"]["suite"] == "tiny" and r["wall_time_s"] is not None
        assert r["peak_memory"]["cpu_rss_mb"] > 0
    knn = next(r for r in records if r["protocol"] == "knn")
    assert knn["settings"]["features"]["progress"] is False and knn["checkpoint"]["sha256"]


@pytest.mark.slow
def test_rerun_does_nothing(world):
    again = world["again"]
    assert set(again.outcome.values()) == {"skipped"}
    assert len(world["records_again"]) == len(world["records"])
    assert max(world["counter"].calls.values()) == 1  # the rerun extracted nothing


@pytest.mark.slow
def test_report_lists_both_checkpoints_and_costs(world):
    report = world["base"] / "report"
    text = (report / "README.md").read_text()
    table = (report / "tables" / "comparison.md").read_text()
    for name in ("a", "b"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert row.count("n/m") == 0 and len(row.split("|")) > 10, row
        assert f"| {name} | knn |" in text
    assert "knn: top1@k20" in table and "cluster C=4: nmi" in table and "davis: J&F-Mean" in table
    csv = (report / "tables" / "comparison.csv").read_text().splitlines()
    assert csv[0].startswith("Checkpoint,") and {line.split(",")[0] for line in csv[1:]} == {"a", "b"}
    assert (report / "tables" / "comparison.tex").read_text().count(r"\\") >= 3
    assert (report / "tables" / "cost.csv").is_file() and (report / "tables" / "papers" / "README.md").is_file()


@pytest.mark.slow
def test_dry_run_shows_state_and_force_reruns_only_what_is_asked(world, capsys, shapes_root):
    with _env(SSLBENCH_RESULTS=str(world["store"]), SSLBENCH_CACHE=str(world["cache"])):
        args = ["eval", "full", *[f"{k}={v}" for k, v in world["ckpts"].items()], "--suite", str(world["suite"])]
        args += ["--data-root", str(shapes_root), "--out", str(world["base"] / "out"), "--dry-run"]
        assert main(args) == 0
        plan = capsys.readouterr().out
        assert "a/knn" in plan and "0 to run" in plan and "todo" not in plan.split("\n", 1)[1]
        forced = run_full(
            world["ckpts"],
            world["suite"],
            world["base"] / "out2",
            report=world["base"] / "report2",
            data_root=shapes_root,
            only=["knn"],
            force=True,
            figures=False,
        )
    with _env(SSLBENCH_RESULTS=str(world["store"]), SSLBENCH_CACHE=str(world["cache"])):
        renamed = run_full(
            {"renamed": world["ckpts"]["a"]},
            world["suite"],
            world["base"] / "out3",
            report=world["base"] / "report3",
            data_root=shapes_root,
            figures=False,
        )
    assert set(renamed.outcome.values()) == {"skipped"}  # same file and settings: done under its earlier label
    row = next(
        line
        for line in (world["base"] / "report3" / "tables" / "comparison.md").read_text().splitlines()
        if line.startswith("| renamed |")
    )
    assert "n/m" not in row
    with pytest.raises(ConfigError, match="the same weights as"):
        run_full(
            {"x": world["ckpts"]["a"], "y": world["ckpts"]["a"]},
            world["suite"],
            world["base"] / "out4",
            data_root=shapes_root,
            dry_run=True,
        )
    assert forced.outcome == {
        **{j.id: "skipped" for j in forced.graph.jobs if j.kind == "features"},
        "a/knn": "ran",
        "b/knn": "ran",
    }


@pytest.mark.slow
def test_sigkill_mid_graph_then_rerun_completes_only_the_missing_jobs(world, tmp_path, shapes_root):
    store, cache = tmp_path / "records", tmp_path / "cache"
    env = {**os.environ, "SSLBENCH_RESULTS": str(store), "SSLBENCH_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    ckpts = [f"{k}={v}" for k, v in world["ckpts"].items()]
    cmd = [sys.executable, "-m", "sslbench_entry", "eval", "full", *ckpts, "--suite", str(world["suite"])]
    cmd += ["--data-root", str(shapes_root), "--out", str(tmp_path / "out"), "--report", str(tmp_path / "report")]
    cmd += ["--no-figures"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill once the first checkpoint's jobs are recorded
        if store.exists() and any(r["checkpoint"]["name"] == "b" for r in read_records(store)):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_records(store)
    done_before = {r["settings"]["job"]["key"] for r in before}
    assert before and len(done_before) < 12

    with _env(SSLBENCH_RESULTS=str(store), SSLBENCH_CACHE=str(cache)):
        resumed = run_full(
            world["ckpts"],
            world["suite"],
            tmp_path / "out",
            report=tmp_path / "report",
            data_root=shapes_root,
            figures=False,
        )
    ran = {j.key for j in resumed.graph.jobs if resumed.outcome[j.id] == "ran"}
    assert ran and not ran & done_before  # only the missing jobs ran
    assert "failed" not in resumed.outcome.values()
    after = read_records(store)

    # every job has exactly its runs: none ran twice
    def runs_per_job(records):
        out = collections.defaultdict(set)
        for r in records:
            out[r["settings"]["job"]["key"]].add(r["run_id"])
        return out

    expected = {j.key: j.expected_runs for j in resumed.graph.jobs if j.kind != "features"}
    old, new = runs_per_job(before), runs_per_job(after)
    assert set(new) == set(expected) and all(len(new[k]) >= n for k, n in expected.items())
    complete = [k for k in old if len(old[k]) >= expected[k]]
    assert complete and all(new[k] == old[k] for k in complete)  # jobs complete before the kill did not run again
    reference = _values(world["records"])
    got = _values(after)
    assert got.keys() == reference.keys()
    for key, value in reference.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_a_failing_job_does_not_stop_independent_ones(world, tmp_path, shapes_root, monkeypatch, capsys):
    from evaluate.orchestration import jobshell
    from evaluate.protocols import knn

    def broken_knn(cfg, backbone=None):
        raise RuntimeError("knn exploded")

    real_features = jobshell.run_features

    def broken_transfer_features(graph, job):
        if "transfer" in job.id:
            raise OSError("disk gone")
        return real_features(graph, job)

    monkeypatch.setattr(knn, "run", broken_knn)
    monkeypatch.setattr(jobshell, "run_features", broken_transfer_features)
    ckpts = [f"{k}={v}" for k, v in world["ckpts"].items()]
    code = main(
        [
            "eval",
            "full",
            *ckpts,
            "--suite",
            str(world["suite"]),
            "--data-root",
            str(shapes_root),
            "--only",
            "knn,logreg-transfer,cluster",
            "--out",
            str(tmp_path / "out"),
            "--report",
            str(tmp_path / "report"),
            "--no-figures",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "failed: a/knn (log: " in out and "blocked: b/logreg-transfer" in out
    log = tmp_path / "out" / "logs" / "a__knn.log"
    assert "RuntimeError: knn exploded" in log.read_text()
    records = read_records(tmp_path / "records")
    assert {(r["checkpoint"]["name"], r["protocol"]) for r in records} == {("a", "cluster"), ("b", "cluster")}
    readme = (tmp_path / "report" / "README.md").read_text()
    assert f"| a/knn | failed | {log} |" in readme
    assert "| b/cluster | ran |" in readme


@pytest.mark.slow
def test_submitit_debug_executor_gives_the_same_records_as_local(world, tmp_path, shapes_root):
    pytest.importorskip("submitit")
    result = run_full(
        world["ckpts"],
        world["suite"],
        tmp_path / "out",
        report=tmp_path / "report",
        data_root=shapes_root,
        executor="slurm",
        cluster="debug",
        figures=False,
    )
    assert set(result.outcome.values()) == {"ran"}, result.outcome
    assert (tmp_path / "out" / "submitit").is_dir()
    got, reference = _values(read_records(tmp_path / "records")), _values(world["records"])
    assert got.keys() == reference.keys()
    for key, value in reference.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def _subset_values(records: list[dict], protocols: set[str]) -> dict[tuple, float]:
    return {k: v for k, v in _values(records).items() if k[1] in protocols}


def test_worker_processes_share_the_cores(monkeypatch):
    """N local worker processes get cores / N threads each (torch's default of every core each oversubscribes them);
    a value the caller set wins."""
    from evaluate.orchestration import executors

    monkeypatch.setattr(executors.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert executors.worker_threads(2, {}) == "8"
    assert executors.worker_threads(3, {}) == "5"
    assert executors.worker_threads(32, {}) == "1"
    assert executors.worker_threads(2, {"OMP_NUM_THREADS": "3"}) == "3"


@pytest.mark.slow
def test_local_worker_processes_give_the_same_records(world, tmp_path, shapes_root):
    result = run_full(
        world["ckpts"],
        world["suite"],
        tmp_path / "out",
        report=tmp_path / "report",
        data_root=shapes_root,
        only=["knn", "cluster"],
        workers=2,
        figures=False,
    )
    assert set(result.outcome.values()) == {"ran"}, result.outcome
    got = _subset_values(read_records(tmp_path / "records"), {"knn", "cluster"})
    reference = _subset_values(world["records"], {"knn", "cluster"})
    assert got.keys() == reference.keys()
    for key, value in reference.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
@pytest.mark.dist
def test_a_multi_gpu_job_runs_under_torchrun_and_records_once(world, tmp_path, shapes_root, monkeypatch):
    from evaluate.orchestration import executors

    suite = tmp_path / "ddp.yaml"
    suite.write_text(
        TINY_SUITE.replace(
            "{protocol: knn, dataset: classification,", "{protocol: knn, dataset: classification, gpus: 2,"
        )
    )
    monkeypatch.setattr(executors, "_gpu_count", lambda: 2)  # two gloo ranks on the CPU stand in for two GPUs
    result = run_full(
        {"a": world["ckpts"]["a"]},
        suite,
        tmp_path / "out",
        report=tmp_path / "report",
        data_root=shapes_root,
        only=["knn"],
        figures=False,
    )
    assert set(result.outcome.values()) == {"ran"}, result.outcome
    records = read_records(tmp_path / "records")
    assert len({r["run_id"] for r in records}) == 1  # rank 0 wrote, once
    assert (tmp_path / "out" / "logs" / "a__knn.log").read_text().count("job a/knn (knn) starts") == 2  # two ranks
    got = _subset_values(records, {"knn"})
    reference = {k: v for k, v in _subset_values(world["records"], {"knn"}).items() if k[0] == "a"}
    assert got == pytest.approx(reference)


def test_set_changes_one_entry_and_is_checked(tmp_path, shapes_root, capsys):
    from evaluate.orchestration.full import plan_full

    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY_SUITE)
    ckpt = _checkpoints(tmp_path)["a"]
    graph = plan_full([str(ckpt)], suite, tmp_path / "out", data_root=shapes_root, settings=["linear.epochs=7"])
    linear = graph.job("a/linear")
    assert linear.spec["config"]["epochs"] == 7 and linear.spec["config"]["mode"] == "cached"
    plain = plan_full([str(ckpt)], suite, tmp_path / "out", data_root=shapes_root)
    assert plain.job("a/linear").key != linear.key and plain.job("a/knn").key == graph.job("a/knn").key
    args = ["eval", "full", str(ckpt), "--suite", str(suite), "--data-root", str(shapes_root), "--dry-run"]
    assert main([*args, "--set", "linear.epochz=7"]) == 2
    assert "protocols.linear (with --set).settings: epochz: unknown key" in capsys.readouterr().err
    assert main([*args, "--set", "nope.epochs=7"]) == 2
    assert "--set nope: expected ID.KEY=VALUE" in capsys.readouterr().err


def test_family_settings_give_a_resnet_its_protocol_and_set_still_wins(tmp_path, shapes_root, capsys):
    """BAM Table 9(b) probes a ResNet-50 at lr 0.3 and a ViT at 0.002: ``family_settings`` over ``settings`` for a
    checkpoint of that family only; an explicit ``--set`` of the same key wins; a family that does not exist is one
    line naming the file and key."""
    from evaluate.orchestration.full import plan_full
    from pretrain.pooled import build_pooled, export_pooled

    suite = tmp_path / "tiny.yaml"
    entry = "{protocol: linear, dataset: classification, settings: {mode: cached, epochs: 3, lr: 0.002, bn_head: true}"
    suite.write_text(TINY_SUITE.replace(
        "  - {protocol: linear, dataset: classification, settings: {mode: cached, epochs: 3, batch_size: 64}}",
        f"  - {entry}, family_settings: {{resnet: {{lr: 0.3, epochs: 2}}}}}}",
    ))  # fmt: skip
    vit = _checkpoints(tmp_path)["a"]
    cnn = tmp_path / "resnet_tiny.pth"
    torch.save(export_pooled(build_pooled("resnet_tiny"), {"method": "bam"}), cnn)
    graph = plan_full([f"vit={vit}", f"cnn={cnn}"], suite, tmp_path / "out", data_root=shapes_root, only=["linear"])
    vit_cfg, cnn_cfg = graph.job("vit/linear").spec["config"], graph.job("cnn/linear").spec["config"]
    assert (vit_cfg["lr"], vit_cfg["epochs"], vit_cfg["bn_head"]) == (0.002, 3, True)
    assert (cnn_cfg["lr"], cnn_cfg["epochs"], cnn_cfg["bn_head"]) == (0.3, 2, True)
    forced = plan_full([f"cnn={cnn}"], suite, tmp_path / "out", data_root=shapes_root, settings=["linear.lr=0.05"])
    assert forced.job("cnn/linear").spec["config"]["lr"] == 0.05  # --set wins; the family's epochs stay
    assert forced.job("cnn/linear").spec["config"]["epochs"] == 2
    # the shipped papers suite: linear-bam runs a ResNet at BAM's ResNet-50 lr
    papers = load_suite(SUITES_DIR / "papers.yaml")
    bam = papers.entry("linear-bam")
    assert bam.settings == {"lr": 0.002, "bn_head": True} and bam.family_settings == {"resnet": {"lr": 0.3}}
    suite.write_text(suite.read_text().replace("resnet: {lr: 0.3", "resnett: {lr: 0.3"))
    args = ["eval", "full", str(vit), "--suite", str(suite), "--data-root", str(shapes_root), "--dry-run"]
    capsys.readouterr()  # the plans' log lines
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "family_settings: 'resnett': expected one of resnet, metaformer" in err
    suite.write_text(suite.read_text().replace("resnett: {lr: 0.3", "resnet: {lrr: 0.3"))
    assert main(args) == 2
    assert "protocols.1.family_settings.resnet: lrr: unknown key" in capsys.readouterr().err


def test_published_rows_match_protocol_dataset_metric_and_architecture():
    from evaluate.orchestration.full_report import paper_arch, published_rows
    from evaluate.orchestration.jobgraph import Checkpoint, Graph

    vits16 = {"embed_dim": 384, "depth": 12, "patch_size": 16, "num_heads": 6, "img_size": 224}
    assert paper_arch(vits16) == "ViT-S/16" and paper_arch({**vits16, "embed_dim": 32}) is None
    graph = Graph("x", "x", "", "/tmp", [Checkpoint("mine", "p", "s", vits16)], [], {})
    columns = {"knn: top1@k20": ("knn", "imagenet", "top1@k20"), "knn sw: top1@k20": ("knn", "shapesworld", "top1@k20")}
    rows = published_rows(graph, columns)
    assert rows.loc["DINO ViT-S/16 (dino.readme)", "knn: top1@k20"] == 74.5  # DINO's README
    assert rows["knn sw: top1@k20"].isna().all()  # nothing published on ShapesWorld
    assert all(name.split(" (")[0].endswith("ViT-S/16") for name in rows.index)
    vitb = Graph("x", "x", "", "/tmp", [Checkpoint("b", "p", "s", {**vits16, "embed_dim": 768})], [], {})
    assert all("ViT-B/16" in name for name in published_rows(vitb, columns).index)


def test_a_rerun_waits_for_a_slurm_job_still_queued_instead_of_submitting_it_again(tmp_path):
    from types import SimpleNamespace

    from evaluate.orchestration.executors import _slurm_marker, queued_job
    from evaluate.orchestration.jobgraph import Graph, Job
    from sslcore.io import atomic_write_json

    job = Job("a/knn", "knn", "a", "knn", "k" * 64, [], {})
    graph = Graph("x", "x", "", str(tmp_path), [], [job], {})
    states = {"7": "PENDING", "8": "RUNNING", "9": "COMPLETED", "10": "FAILED"}
    handle = lambda job_id: SimpleNamespace(job_id=job_id, state=states[job_id])  # noqa: E731
    assert queued_job(graph, job, handle) is None  # never submitted
    for job_id, expected in (("7", "7"), ("8", "8"), ("9", None), ("10", None)):
        atomic_write_json(_slurm_marker(graph, job), {"slurm_job_id": job_id})
        found = queued_job(graph, job, handle)
        assert (found.job_id if found else None) == expected, job_id


@pytest.mark.slow
def test_slurm_submission_passes_dependencies_and_resources(world, tmp_path, shapes_root, monkeypatch):
    submitit = pytest.importorskip("submitit")
    submissions = []

    class FakeJob:
        def __init__(self, job_id, fn, args):
            self.job_id, self.fn, self.args, self.state = job_id, fn, args, "PENDING"

        def result(self):
            return self.fn(*self.args)

    class FakeSlurmExecutor:  # what submitit.AutoExecutor gives on a Slurm cluster, without sbatch
        cluster = "slurm"

        def __init__(self, folder, cluster=None):
            self.params = {}

        def update_parameters(self, **params):
            self.params = params

        def submit(self, fn, *args):
            submissions.append((args[1], dict(self.params), str(1000 + len(submissions))))
            return FakeJob(submissions[-1][2], fn, args)

    monkeypatch.setattr(submitit, "AutoExecutor", FakeSlurmExecutor)
    suite = tmp_path / "gpus.yaml"
    suite.write_text(
        TINY_SUITE.replace(
            "{protocol: knn, dataset: classification,", "{protocol: knn, dataset: classification, gpus: 4,"
        )
    )
    result = run_full(
        world["ckpts"],
        suite,
        tmp_path / "out",
        report=tmp_path / "report",
        data_root=shapes_root,
        only=["knn", "davis"],
        executor="slurm",
        slurm_params={"slurm_partition": "gpu"},
        figures=False,
    )
    assert set(result.outcome.values()) == {"ran"}, result.outcome
    by_job = {job_id: (params, slurm_id) for job_id, params, slurm_id in submissions}
    features = next(j for j in by_job if j.startswith("a/features/"))
    knn, _ = by_job["a/knn"]
    assert knn["slurm_additional_parameters"]["dependency"] == f"afterok:{by_job[features][1]}"
    assert knn["tasks_per_node"] == 4 and knn["gpus_per_node"] == 4 and knn["slurm_partition"] == "gpu"
    assert "dependency" not in by_job[features][0]["slurm_additional_parameters"]
    assert by_job[features][0]["gpus_per_node"] == 1 and by_job["b/davis"][0]["tasks_per_node"] == 1
    assert all(p["slurm_additional_parameters"]["kill_on_invalid_dep"] == "yes" for p, _ in by_job.values())
    got = _subset_values(read_records(tmp_path / "records"), {"knn"})
    assert got == pytest.approx(_subset_values(world["records"], {"knn"}))


@pytest.mark.slow
def test_a_fine_tune_job_records_and_its_curves_and_the_attention_maps_are_in_the_report(world, tmp_path, shapes_root):
    suite = tmp_path / "ft.yaml"
    suite.write_text(
        TINY_SUITE
        + """  - protocol: finetune
    dataset: classification
    recipe: deit_bam
    settings: {aug: {input_size: 32}, batch_size: 8, epochs: 2, num_workers: 0, threads: 1,
               optim: {lr: 5.0e-3, warmup_epochs: 1}}
"""
    )
    result = run_full(
        {"a": world["ckpts"]["a"]},
        suite,
        tmp_path / "out",
        report=tmp_path / "report",
        data_root=shapes_root,
        only=["finetune"],
    )
    assert result.outcome == {"a/finetune": "ran"}
    records = read_records(tmp_path / "records")
    top1 = next(r for r in records if r["metric"] == "top1")
    assert top1["protocol"] == "finetune" and top1["dataset"] == "shapesworld" and 0 <= top1["value"] <= 100
    assert top1["settings"]["recipe"] == "deit_bam" and top1["settings"]["epochs"] == 2
    figures = {p.name for p in (tmp_path / "report" / "figures").glob("*.png")}
    assert {"finetune-finetune.png", "attention-a.png"} <= figures
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "![finetune-finetune](figures/finetune-finetune.png)" in readme and "finetune: top1" in readme


def test_one_run_at_a_time_per_working_directory(tmp_path):
    import fcntl

    from evaluate.orchestration.full import _exclusive

    with _exclusive(tmp_path), pytest.raises(ConfigError, match="another `sslbench eval full` is running"):
        with _exclusive(tmp_path):
            pass
    with open(tmp_path / ".lock") as handle:  # released afterwards
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


# ------------------------------------------------------------------------------------------------- baselines
@pytest.mark.slow
def test_raw_pixel_pseudo_checkpoint_runs_its_protocols_and_skips_patch_ones(tmp_path, shapes_root, capsys):
    from evaluate.checkpoints.baselines import raw_pixels
    from evaluate.protocols import knn
    from sslcore.config import load_config

    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY_SUITE)
    net = _checkpoints(tmp_path)["a"]
    args = ["eval", "full", f"a={net}", "px=baseline:raw-pixels:8@32", "--suite", str(suite)]
    args += ["--data-root", str(shapes_root)]
    args += ["--out", str(tmp_path / "out"), "--report", str(tmp_path / "report"), "--only", "knn,linear,davis"]
    assert main([*args, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "px/knn" in plan and "px/davis" not in plan.splitlines()[0]
    assert "px/davis: not applicable (label propagation needs patch tokens" in plan
    assert main([*args, "--no-figures"]) == 0
    records = read_records(tmp_path / "records")
    net_records = [r for r in records if r["checkpoint"]["name"] == "a"]
    assert {r["protocol"] for r in net_records} == {"knn", "linear", "davis"}
    records = [r for r in records if r not in net_records]
    assert {(r["protocol"], r["dataset"]) for r in records} == {("knn", "shapesworld"), ("linear", "shapesworld")}
    loaded = raw_pixels(32, 8)
    for r in records:
        assert r["checkpoint"]["name"] == "px" and r["checkpoint"]["sha256"] == loaded.info["sha256"]
        assert r["checkpoint"]["format"] == "raw-pixels"
    linear = next(r for r in records if r["protocol"] == "linear")
    assert linear["settings"]["taps"] == {"taps": "cls", "n_last": 1, "interleave": False}
    # the graph's k-NN equals k-NN run directly on the in-memory baseline (the same 8 x 8 pooled pixels)
    direct = load_config(knn.KNNConfig, None, [f"data.root={shapes_root / 'classification'}", "features.cache=false"])
    with _env(SSLBENCH_RESULTS=str(tmp_path / "direct")):
        want = knn.run(direct, backbone=loaded)
    got = {r["metric"]: r["value"] for r in records if r["protocol"] == "knn"}
    assert got["top1@k20"] == pytest.approx(want["top1@k20"]) and 10.0 < got["top1@k20"] <= 100.0
    text = (tmp_path / "report" / "README.md").read_text()
    assert "| px/davis | not applicable: label propagation needs patch tokens" in text
    table = (tmp_path / "report" / "tables" / "comparison.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| Checkpoint |")).split("|")
    row = next(line for line in table if line.startswith("| px |")).split("|")
    cells = {h.strip(): c.strip() for h, c in zip(header, row)}
    assert cells["davis: J&F-Mean"] == "n/a" and float(cells["knn: top1@k20"]) == pytest.approx(got["top1@k20"], 0.01)
    assert "n/m" not in cells.values()
    total = len(read_records(tmp_path / "records"))
    assert main([*args, "--no-figures"]) == 0  # the rerun runs nothing
    assert "0 ran, " in capsys.readouterr().out and len(read_records(tmp_path / "records")) == total


def test_a_cnn_checkpoint_gets_the_frozen_protocols_and_skips_the_vit_only_ones(tmp_path, shapes_root, capsys):
    import torch

    from pretrain.pooled import build_pooled, export_pooled

    cnn = tmp_path / "resnet_tiny.pth"
    torch.manual_seed(0)
    torch.save(export_pooled(build_pooled("resnet_tiny"), {"method": "bam"}), cnn)
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY_SUITE)
    args = ["eval", "full", f"cnn={cnn}", "--suite", str(suite), "--data-root", str(shapes_root)]
    args += ["--out", str(tmp_path / "out"), "--report", str(tmp_path / "report"), "--dry-run"]
    assert main(args) == 0
    plan = capsys.readouterr().out
    assert "cnn/davis: not applicable (davis needs a ViT (patch tokens); a resnet checkpoint has one pooled" in plan
    jobs = [line for line in plan.splitlines() if line.startswith("cnn/") and "not applicable" not in line]
    assert any("knn" in line for line in jobs) and not any("davis" in line for line in jobs), plan
    assert main([*args[:-1], "--only", "knn,linear,davis", "--no-figures"]) == 0  # linear runs on the pooled feature
    records = read_records(tmp_path / "records")
    assert {r["protocol"] for r in records} == {"knn", "linear"}
    linear = next(r for r in records if r["protocol"] == "linear")
    assert linear["settings"]["taps"] == {"taps": "cls", "n_last": 1, "interleave": False}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("baseline:nope", "baseline:nope: unknown baseline 'nope' (known: raw-pixels"),
        ("baseline:raw-pixels:0", "SIDE '0' must be a positive integer"),
        ("baseline:raw-pixels:16@x", "INPUT 'x' must be a positive integer"),
        ("baseline:raw-pixels:64@32", "SIDE 64 must not exceed the input size 32"),
    ],
)
def test_unknown_pseudo_checkpoint_is_one_line_exit_2_before_any_work(tmp_path, capsys, shapes_root, spec, message):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "out"
    args = ["eval", "full", spec, "--suite", str(suite), "--data-root", str(shapes_root), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists() and not (tmp_path / "records").exists()


def test_editing_a_dense_config_or_its_base_makes_its_records_stale(tmp_path, shapes_root):
    """A dense job's key holds the text of its mm config and of every _base_ file, so an edited config reruns
    instead of reusing records made with the old one."""
    from evaluate.orchestration.full import plan_full

    configs = tmp_path / "configs"
    (configs / "_base_").mkdir(parents=True)
    (configs / "_base_" / "base.py").write_text("train_iters = 6\n")
    # a package's own base (mmdet::...) counts by name, as the shipped configs use them
    (configs / "tiny.py").write_text('_base_ = ["./_base_/base.py", "mmdet::_base_/default_runtime.py"]\nwidth = 64\n')
    suite = tmp_path / "dense.yaml"
    suite.write_text(
        "schema: sslbench-suite/v1\nname: dense\ndatasets:\n  coco: {kind: coco, root: coco}\nprotocols:\n"
        f"  - {{protocol: coco, dataset: coco, settings: {{config: {configs / 'tiny.py'}}}}}\n"
    )
    ckpt = _checkpoints(tmp_path)["a"]

    def key() -> str:
        graph = plan_full({"a": ckpt}, suite, tmp_path / "out", data_root=shapes_root)
        return next(j.key for j in graph.jobs if j.kind == "coco")

    first = key()
    assert key() == first  # planning twice: the same key
    (configs / "_base_" / "base.py").write_text("train_iters = 7\n")
    second = key()
    assert second != first
    (configs / "tiny.py").write_text('_base_ = ["./_base_/base.py", "mmdet::_base_/default_runtime.py"]\nwidth = 32\n')
    assert key() not in (first, second)
    (configs / "tiny.py").write_text('_base_ = ["./_base_/missing.py"]\n')
    with pytest.raises(SSLBenchError, match="missing.py"):
        key()
