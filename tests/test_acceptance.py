"""benchmarks/gpu/acceptance.sh: the CPU dry run passes with every stage, bad arguments stop before any work, and the
checks it makes can fail (a wrong device result, a failing stage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu" / "acceptance.sh"
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
sys.path.insert(0, str(REPO / "benchmarks"))

import acceptance as A  # noqa: E402


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "SSLBENCH_PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=600)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--dry-run", "--stages", "numerics,warp"], {}, "--stages 'numerics,warp': unknown ['warp']"),
        (["--dry-run", "--set", "dense_iters=many"], {}, "--set 'dense_iters=many': 'many' is not a int"),
        (["--dry-run", "--set", "speed=3"], {}, "--set 'speed=3': expected KEY=VALUE"),
        (["--dry-run", "--set", "dense_tasks=coco,voc"], {}, "--set: unknown ['voc']"),
        (["--dry-run", "--device", "tpu"], {}, "--device 'tpu': must be cuda or cpu"),
        (["--dry-run", "--peak-tflops", "0"], {}, "--peak-tflops 0.0: must be > 0"),
        (["--dry-run"], {"SSLBENCH_ACCEPTANCE_TIMEOUT": "soon"}, "SSLBENCH_ACCEPTANCE_TIMEOUT=soon"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_before_any_work(tmp_path, args, env, message):
    out = tmp_path / "out"
    result = run(*args, "--out", str(out), env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_the_gpu_run_refuses_a_machine_without_cuda(tmp_path):
    result = run("--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no CUDA device visible; use --dry-run" in result.stderr


def ctx(tmp_path) -> A.Ctx:
    return A.Ctx(torch.device("cpu"), A.DRY, tmp_path, True, None)


def test_numerics_fail_when_the_device_result_is_wrong(tmp_path, monkeypatch, capsys):
    """A device k-NN or BAM loss that differs slightly from the CPU's is a FAIL row, not a pass (the first call of
    each is the CPU reference, the second the "device"; on a CPU both must be separate computations, not aliases)."""
    import evaluate.protocols.knn as knn
    import pretrain.losses.bam as bam

    def second_call_off(real, shift):
        calls = []

        def wrapped(*args, **kwargs):
            calls.append(1)
            return shift(real(*args, **kwargs)) if len(calls) == 2 else real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(
        knn, "knn_predict", second_call_off(knn.knn_predict, lambda out: {k: v * (1 + 1e-4) for k, v in out.items()})
    )
    monkeypatch.setattr(bam, "bam_loss", second_call_off(bam.bam_loss, lambda out: (out[0] * (1 + 1e-3), out[1])))
    c = ctx(tmp_path)
    A.stage_numerics(c)
    rows = {r.figure: r for r in c.rows}
    assert rows["k-NN class scores, fp32 (rel. err.)"].passed is False
    assert rows["k-NN class scores, fp32 (rel. err.)"].value == pytest.approx(1e-4, rel=1e-3)
    bam_row = rows["BAM loss + grad, fp32 (rel. err.)"]  # loss and gradient scaled by 1 + 1e-3
    assert bam_row.passed is False and bam_row.value == pytest.approx(1e-3, rel=1e-3)
    assert rows["BAM loss + grad in bf16 autocast (fp32 inside)"].value == 0.0  # the third call: unshifted
    # the CPU against itself is exact in fp32; bf16 autocast is measured and within its tolerance, not zero
    assert rows["features vit_pico, fp32 (rel. err.)"].value == 0.0
    assert 0.0 < rows["features vit_pico, bf16 (rel. err.)"].value <= A.BF16_TOL
    engine = rows["engine: 2 BAM steps, bf16 vs fp32 CPU (losses)"]
    assert 0.0 < engine.value <= A.BF16_TOL and engine.passed
    assert "FAIL" in capsys.readouterr().out


def test_a_stage_that_raises_is_a_fail_row_and_exit_1(tmp_path, monkeypatch):
    def broken(c):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setitem(A.RUNNERS, "davis", broken)
    code = A.main(["--dry-run", "--stages", "davis", "--out", str(tmp_path), "--no-records"])
    assert code == 1
    rows = json.loads((tmp_path / "acceptance.json").read_text())
    assert rows == [
        {
            "stage": "davis",
            "figure": "stage raised",
            "value": 0.0,
            "unit": "",
            "ratio": "",
            "passed": False,
            "note": "RuntimeError: no kernel image is available for execution on the device",
        }
    ]


def test_sizes_overrides_parse_ints_and_tuples():
    sizes = A.parse_sets(["dense_iters=3", "davis_hw=96,160", "extract_archs=vit_tiny"], A.GPU)
    assert sizes.dense_iters == 3 and sizes.davis_hw == (96, 160) and sizes.extract_archs == ("vit_tiny",)
    assert sizes.knn_train == 1_281_167  # the rest is the GPU plan


@pytest.mark.slow
@pytest.mark.dense
def test_the_dry_run_passes_every_stage_and_writes_benchmark_records(tmp_path):
    pytest.importorskip("mmdet")
    out, store = tmp_path / "out", tmp_path / "records"
    result = run("--dry-run", "--out", str(out), "--results", str(store))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rows = json.loads((out / "acceptance.json").read_text())
    assert {r["stage"] for r in rows} == set(A.DEFAULT_STAGES)
    assert not [r for r in rows if r["passed"] is False]
    checked = {r["figure"] for r in rows if r["passed"] is True}
    assert {"k-NN class scores, fp32 (rel. err.)", "propagation soft labels, fp32 (rel. err.)"} <= checked
    assert any("compiled: images/s" in f for f in checked)  # torch.compile ran and matched eager
    assert sum("train" in r["figure"] for r in rows if r["stage"] == "dense" and r["passed"]) == 2
    summary = result.stdout[result.stdout.index("\nsummary") :].splitlines()[3:]  # after the header
    assert sum("| pass |" in line for line in summary) == sum(r["passed"] is True for r in rows)
    records = [json.loads(line) for line in (store / "benchmark.jsonl").read_text().splitlines()]
    assert len(records) == len(rows) and {r["protocol"] for r in records} == {"benchmark"}
    assert {r["dataset"] for r in records} == set(A.DEFAULT_STAGES) and {r["split"] for r in records} == {"dry-run"}
    assert records[0]["settings"]["dry_run"] is True and records[0]["settings"]["row"]["stage"] == "numerics"
