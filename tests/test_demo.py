"""``sslbench demo --quick`` end to end: data -> BAM, DINO, iBOT, ADCLR, SERE -> their step-0 networks and raw pixels ->
``sslbench eval full`` with the shapesworld suite -> its report, and the demo's page (learning check, figures)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from evaluate.cli import main as cli_main
from evaluate.reporting.records import read_records

PROTOCOL_DATASETS = {
    ("knn", "shapesworld"),
    ("linear", "shapesworld"),
    ("logreg", "shapesworld-transfer"),
    ("logreg", "shapesworld-1pct"),
    ("logreg", "shapesworld-10pct"),
    ("cluster", "shapesworld"),
    ("davis", "shapesworld-davis"),
}


@pytest.mark.slow
def test_quick_demo_end_to_end_and_rerun_reuses(tmp_path):
    out, report = tmp_path / "runs", tmp_path / "report"
    args = ["demo", "--quick", "--out", str(out), "--report", str(report)]
    assert cli_main(args) == 0

    records = read_records(out / "records")
    names = {r["checkpoint"]["name"] for r in records}
    assert {"bam", "dino", "ibot", "adclr", "sere", "bam-step0", "dino-step0", "raw-pixels-16px"} <= names
    for name in names:
        done = {(r["protocol"], r["dataset"]) for r in records if r["checkpoint"]["name"] == name}
        want = PROTOCOL_DATASETS - ({("davis", "shapesworld-davis")} if name.startswith("raw-pixels") else set())
        assert done == want, name
    knn = {r["checkpoint"]["name"]: r["value"] for r in records if r["metric"] == "top1@k20"}
    assert all(0.0 <= v <= 100.0 for v in knn.values())

    text = (report / "README.md").read_text()
    assert "## Results: every protocol, every checkpoint" in text and "## Wall time of each stage" in text
    check = text.split("## Learning check")[1].split("\n## ")[0]
    for method in ("bam", "dino", "ibot", "adclr", "sere"):  # a learning-check row: k-NN, both baselines
        row = next(line for line in check.splitlines() if line.startswith(f"| {method} |"))
        assert len(re.findall(r"[-+]?\d+\.\d", row)) >= 5, row
    results = text.split("## Results: every protocol, every checkpoint")[1]
    for name in names:  # one row per checkpoint with measured numbers in it
        row = next(line for line in results.splitlines() if line.startswith(f"| {name} |"))
        assert len(re.findall(r"\d+\.\d", row)) >= 8, row
    assert "Online k-NN top-1" in text and "Loss " in text

    # the evaluation is one `sslbench eval full` run: its graph, its report, the pixel baseline's DAVIS not applicable
    full = report / "full"
    assert (out / "eval" / "graph.json").is_file() and (full / "README.md").is_file()
    assert (
        "| raw-pixels-16px/davis | not applicable: label propagation needs patch tokens"
        in (full / "README.md").read_text()
    )
    comparison = (full / "tables" / "comparison.md").read_text().splitlines()
    assert {line.split("|")[1].strip() for line in comparison if line.startswith("| ")} >= names
    assert (
        "davis (label propagation needs patch tokens" in text.split("not applicable to raw pixels:")[1].split("\n")[0]
    )
    pixels_row = next(line for line in results.splitlines() if line.startswith("| raw-pixels-16px |"))
    assert pixels_row.count("n/a") == 1 and "n/m" not in pixels_row  # DAVIS

    figures = {p.name for p in (full / "figures").glob("*.png")} | {p.name for p in (report / "figures").glob("*.png")}
    assert {
        "entropy.png",
        "curves.png",
        "collapse.png",
        "attention-bam.png",
        "attention-photo-bam.png",
        "attention-photo-bam-step0.png",
    } <= figures
    assert {"attention-dino.png", "attention-ibot.png"} <= figures
    for name in ("entropy", "collapse", "attention-bam", "attention-photo-bam"):  # the page shows every figure
        assert f"![{name}](" in text
    a = np.asarray(Image.open(full / "figures" / "attention-bam.png").convert("L"), np.float32)
    b = np.asarray(Image.open(full / "figures" / "attention-bam-step0.png").convert("L"), np.float32)
    assert a.std() > 1.0 and (a.shape != b.shape or np.abs(a - b).mean() > 0.1)
    papers = full / "tables" / "papers"
    assert (papers / "README.md").is_file() and (papers / "full_protocol.md").is_file()
    assert len(list(papers.glob("*.tex"))) > 20
    first = re.search(r"\| eval jobs \| (\d+) ran, 0 reused, 0 failed", text)
    assert first and int(first[1]) > 0, text.split("## Wall time")[1]

    # a second run reuses data, checkpoints, records: no job runs again
    assert cli_main(args) == 0
    assert len(read_records(out / "records")) == len(records)
    again = (report / "README.md").read_text()
    assert re.search(rf"\| eval jobs \| 0 ran, {first[1]} reused, 0 failed", again), again.split("## Wall time")[1]


def test_demo_adds_the_suites_dense_opt_ins_when_the_dense_extra_is_installed(monkeypatch):
    import importlib.util

    from evaluate.demo import pipeline
    from evaluate.orchestration.suite import load_suite, select

    monkeypatch.setattr(pipeline, "dense_missing", lambda: None)
    only, why = pipeline.demo_protocols(pipeline.PLANS["default"])
    suite = load_suite(pipeline.SUITE)
    chosen = [p.id for p in select(suite, only)]
    assert why is None and chosen[-2:] == ["coco", "ade20k"]
    assert chosen[:-2] == [p.id for p in select(suite)]  # every default entry, and no fine-tune
    assert pipeline.demo_protocols(pipeline.PLANS["quick"]) == (None, None)  # the CI smoke run stays light

    monkeypatch.undo()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mmdet" else real(name, *a))
    only, why = pipeline.demo_protocols(pipeline.PLANS["default"])
    assert only is None and "mmdet is missing" in why and "make setup-dense" in why
