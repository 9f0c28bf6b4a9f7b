"""Issue 17 item 10: peak memory in records is the run's own (not the process lifetime maximum), and images/s."""

from __future__ import annotations

import time

from evaluate.reporting.records import make_records
from sslcore.io import count_images, start_meter


def test_peak_rss_is_per_run_not_per_process(monkeypatch):
    """Controlled RSS readings: the second run's peak ignores the first run's high-water mark."""
    import sslcore.io as sio

    readings = iter([100.0, 100.0, 900.0, 150.0, 150.0, 160.0] + [160.0] * 1000)  # init, peak, peak, init, ...
    monkeypatch.setattr(sio, "_rss_mb", lambda: next(readings))
    first = sio.ResourceMeter(interval=3600)  # no sampler ticks: every reading is explicit
    assert first.peak_memory_mb()["cpu_rss_mb"] == 100.0
    assert first.peak_memory_mb()["cpu_rss_mb"] == 900.0  # the run's allocation
    second = sio.ResourceMeter(interval=3600)  # a new run after the memory was freed
    assert second.peak_memory_mb()["cpu_rss_mb"] == 150.0
    assert second.peak_memory_mb()["cpu_rss_mb"] == 160.0  # not 900: not the process lifetime maximum


def test_sampler_sees_a_short_lived_allocation_in_a_fresh_process():
    import subprocess
    import sys

    code = (
        "import time, numpy as np\n"
        "from sslcore.io import start_meter\n"
        "m = start_meter(); base = m.peak_memory_mb()['cpu_rss_mb']\n"
        "big = np.ones(200 * 2**20 // 8); time.sleep(0.5); del big\n"
        "time.sleep(0.1); print(m._peak_rss - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert float(out.stdout) >= 150  # the sampler thread caught the 200 MiB that lived 0.5 s


def test_images_per_second_is_recorded():
    start_meter()
    count_images(500)
    time.sleep(0.05)
    (record,) = make_records("knn", "x", "val", {"top1": 1.0})
    assert record.images_per_s is not None and 0 < record.images_per_s <= 500 / 0.05


def test_protocol_records_carry_throughput(shapes_root, tmp_path):
    from evaluate.protocols.knn import KNNConfig, run
    from evaluate.reporting.records import read_records
    from pretrain.vit import ARCHS, SSLViT

    cfg = KNNConfig()
    cfg.data.root, cfg.out, cfg.ks = str(shapes_root / "classification"), str(tmp_path / "o"), [5]
    cfg.features.progress = False
    run(cfg, backbone=SSLViT(ARCHS["vit_femto"]))
    (rec, *_) = read_records()
    # 120 train + 40 val images through the backbone during the run
    assert rec["images_per_s"] and rec["images_per_s"] >= 160 / rec["wall_time_s"] * 0.5
