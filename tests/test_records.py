from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from evaluate.records import append_records, make_records, read_records
from sslcore.errors import SSLBenchError
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


def test_malformed_store_line_is_named(tmp_path):
    (tmp_path / "records.jsonl").write_text(json.dumps({"metric": "top1"}) + "\n{broken\n")
    with pytest.raises(SSLBenchError, match=r"records.jsonl:2: malformed record"):
        read_records(tmp_path)


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = atomic_write_text(tmp_path / "ckpt.txt", "good")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write("half-writ")
            raise RuntimeError("killed")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.txt"]
