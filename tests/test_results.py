"""Results store query API: flattening, de-duplication, filters, export, ``sslbench results``."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evaluate.cli import main
from evaluate.reporting.records import Record, append_records
from evaluate.reporting.results import deduplicate, export, find_run, query, records_frame, runs_frame
from sslcore.errors import SSLBenchError

ARCH = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}


def rec(value, *, sha="a" * 64, name="bam-femto", created="2026-01-01T10:00:00+0000", run_id="r1", **kw):
    fields = dict(protocol="knn", dataset="shapesworld", split="val", metric="top1@k20", settings={"T": 0.07})
    fields.update(kw)
    return Record(
        value=value,
        checkpoint={"name": name, "sha256": sha, "format": "sslbench", "arch": ARCH, "path": f"/x/{name}.pth"},
        created=created,
        run_id=run_id,
        wall_time_s=2.5,
        peak_memory={"cpu_rss_mb": 100.0},
        **fields,
    )


def test_flatten_columns(tmp_path):
    append_records([rec(50.0)], tmp_path)
    frame = query(tmp_path)
    row = frame.iloc[0]
    assert row["checkpoint"] == "bam-femto" and row["checkpoint_sha256"] == "a" * 64
    assert row["checkpoint_arch"] == "ViT-p8 d32 L2 h2" and row["checkpoint_format"] == "sslbench"
    assert row["settings_summary"] == "T=0.07" and row["settings"] == {"T": 0.07}
    assert row["value"] == 50.0 and row["wall_time_s"] == 2.5 and row["peak_rss_mb"] == 100.0


def test_dedup_keeps_latest_per_key(tmp_path):
    append_records(
        [
            rec(51.0, created="2026-01-02T10:00:00+0000", run_id="new"),
            rec(50.0, created="2026-01-01T10:00:00+0000", run_id="old"),  # older, written later
            rec(60.0, created="2026-01-01T09:00:00+0000", run_id="k", settings={"T": 0.2}),  # other settings
            rec(40.0, created="2026-01-01T09:00:00+0000", run_id="other", sha="b" * 64, name="random"),
        ],
        tmp_path,
    )
    frame = query(tmp_path)
    assert sorted(frame["run_id"]) == ["k", "new", "other"]
    assert frame.loc[frame["run_id"] == "new", "value"].item() == 51.0
    assert len(query(tmp_path, dedup=False)) == 4


def test_dedup_tie_broken_by_store_order():
    same = "2026-01-01T10:00:00+0000"
    frame = records_frame(
        [json.loads(r.to_json()) for r in (rec(1.0, run_id="a", created=same), rec(2.0, run_id="b", created=same))]
    )
    assert deduplicate(frame)["run_id"].tolist() == ["b"]


def test_filters(tmp_path):
    append_records(
        [
            rec(50.0, run_id="k1"),
            rec(55.0, run_id="l1", protocol="linear", metric="top1", settings={"lr": 0.1}),
            rec(20.0, run_id="k2", sha="b" * 64, name="random"),
        ],
        tmp_path,
    )
    assert query(tmp_path, protocol="linear")["run_id"].tolist() == ["l1"]
    assert query(tmp_path, checkpoint="random")["run_id"].tolist() == ["k2"]
    assert query(tmp_path, checkpoint="bbbb")["run_id"].tolist() == ["k2"]  # sha256 prefix
    assert query(tmp_path, settings={"lr": 0.1})["run_id"].tolist() == ["l1"]
    assert set(query(tmp_path, protocol=["knn", "linear"], checkpoint="bam-femto")["run_id"]) == {"k1", "l1"}


def test_published_records_join_the_query(tmp_path):
    append_records([rec(50.0)], tmp_path)
    frame = query(tmp_path, include_published=True, protocol="knn", dataset="imagenet")
    published = frame[frame["source"] == "published"]
    dino = published[published["checkpoint"] == "DINO ViT-S/16"]
    assert 74.5 in dino["value"].tolist()


def test_runs_frame_and_find_run(tmp_path):
    append_records([rec(50.0, run_id="abc1"), rec(49.0, run_id="abc1", metric="top1@k10")], tmp_path)
    append_records([rec(20.0, run_id="abd2", sha="b" * 64, name="random")], tmp_path)
    runs = runs_frame(query(tmp_path))
    assert runs["run_id"].tolist() == ["abc1", "abd2"]
    assert runs.loc[0, "metrics"] == "top1@k20=50 top1@k10=49"
    assert [r["metric"] for r in find_run("abc", tmp_path)] == ["top1@k20", "top1@k10"]
    with pytest.raises(SSLBenchError, match="ambiguous"):
        find_run("ab", tmp_path)
    with pytest.raises(SSLBenchError, match="not found"):
        find_run("zz", tmp_path)


def test_export_roundtrip(tmp_path):
    append_records([rec(50.0), rec(55.0, run_id="l1", protocol="linear", metric="top1")], tmp_path / "store")
    frame = query(tmp_path / "store")
    csv = pd.read_csv(export(frame, tmp_path / "out.csv"))
    assert csv["value"].tolist() == [50.0, 55.0]
    assert json.loads(csv["settings"][0]) == {"T": 0.07}
    lines = (export(frame, tmp_path / "out.jsonl")).read_text().splitlines()
    assert [json.loads(line)["run_id"] for line in lines] == ["r1", "l1"]
    with pytest.raises(SSLBenchError, match="unknown export format"):
        export(frame, tmp_path / "out.parquet")


def test_cli_ls_show_export(tmp_path, capsys):
    store = tmp_path / "store"
    append_records([rec(50.0, run_id="run123456789")], store)
    assert main(["results", "ls", "--store", str(store)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("run123456789") and "top1@k20=50" in line and "bam-femto" in line
    assert main(["results", "show", "run123", "--store", str(store)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["value"] == 50.0 and shown[0]["checkpoint"]["sha256"] == "a" * 64
    assert main(["results", "export", "--store", str(store), "--format", "csv", str(tmp_path / "e.csv")]) == 0
    assert pd.read_csv(tmp_path / "e.csv")["run_id"].tolist() == ["run123456789"]
    assert main(["results", "show", "nope", "--store", str(store)]) == 2


def test_malformed_store_line_is_skipped_with_a_warning(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    (store / "records.jsonl").write_text('{"protocol": "knn"}\n{broken\n')
    assert main(["results", "ls", "--store", str(store)]) == 0  # issue 17: one bad line must not hide the rest
    assert "records.jsonl:2: skipping a malformed record" in capsys.readouterr().err
