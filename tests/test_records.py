from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from evaluate.reporting.records import append_records, make_records, read_records
from sslcore.io import atomic_open, atomic_write_text


def _writer(store: str, worker: int, count: int) -> None:
    for i in range(count):
        append_records(make_records("knn", "shapesworld", "val", {"top1": worker * 1000 + i}, seed=i), store)


def test_records_carry_provenance(tmp_path):
    records = make_records(
        "knn", "shapesworld", "val", {"top1": 81.5, "top5": 99.0}, checkpoint={"sha256": "ab"}, settings={"k": 20}
    )
    path = append_records(records, tmp_path)
    rows = read_records(tmp_path)
    assert path.name == "records.jsonl" and [r["metric"] for r in rows] == ["top1", "top5"]
    assert rows[0]["run_id"] == rows[1]["run_id"] and rows[0]["settings"] == {"k": 20}
    assert rows[0]["versions"]["python"] and rows[0]["peak_memory"]["cpu_rss_mb"] > 0
    assert rows[0]["value"] == 81.5 and rows[0]["source"] == "measured"


def test_concurrent_appends_never_interleave(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    rows = read_records(tmp_path)
    assert len(rows) == 160
    assert sorted(r["value"] for r in rows) == sorted(w * 1000 + i for w in range(4) for i in range(40))


def test_malformed_store_lines_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    good = json.dumps({"metric": "top1"}).encode()
    (tmp_path / "records.jsonl").write_bytes(good + b"\n{broken\n\xff\xfe\n[1, 2]\n" + good + b"\n")
    with caplog.at_level("WARNING", logger="sslbench"):
        rows = read_records(tmp_path)
    assert rows == [{"metric": "top1"}] * 2
    for lineno, problem in ((2, "not JSON"), (3, "not UTF-8"), (4, "a JSON list, not an object")):
        assert f"records.jsonl:{lineno}: skipping a malformed record ({problem}" in caplog.text


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = atomic_write_text(tmp_path / "ckpt.txt", "good")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write("half-writ")
            raise RuntimeError("killed")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.txt"]
