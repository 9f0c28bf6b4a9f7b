"""Issue 17 item 10: peak memory in records is the run's own (not the process lifetime maximum), and images/s."""

from __future__ import annotations

import time

import numpy as np

from evaluate.records import make_records
from sslcore.io import count_images, current_meter, start_meter


def test_peak_rss_is_per_run_not_per_process():
    first = start_meter()
    base = first.peak_memory_mb()["cpu_rss_mb"]
    big = np.ones(100 * 2**20 // 8)  # 100 MiB, touched
    time.sleep(0.2)
    del big
    peak_first = first.peak_memory_mb()["cpu_rss_mb"]
    assert peak_first >= base + 80
    second = start_meter()
    time.sleep(0.1)
    (record,) = make_records("knn", "x", "val", {"top1": 1.0})
    assert current_meter() is second
    assert record.peak_memory["cpu_rss_mb"] < peak_first - 60  # the freed 100 MiB is not this run's peak


def test_images_per_second_is_recorded():
    start_meter()
    count_images(500)
    time.sleep(0.05)
    (record,) = make_records("knn", "x", "val", {"top1": 1.0})
    assert record.images_per_s is not None and 0 < record.images_per_s <= 500 / 0.05


def test_protocol_records_carry_throughput(shapes_root, tmp_path):
    from evaluate.knn import KNNConfig, run
    from evaluate.records import read_records
    from pretrain.vit import ARCHS, SSLViT

    cfg = KNNConfig()
    cfg.data.root, cfg.out, cfg.ks = str(shapes_root / "classification"), str(tmp_path / "o"), [5]
    cfg.features.progress = False
    run(cfg, backbone=SSLViT(ARCHS["vit_femto"]))
    (rec, *_) = read_records()
    # 120 train + 40 val images through the backbone during the run
    assert rec["images_per_s"] and rec["images_per_s"] >= 160 / rec["wall_time_s"] * 0.5
