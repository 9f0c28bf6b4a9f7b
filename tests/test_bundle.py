"""The offline GPU install bundle (scripts/bundle_gpu.sh) and the SSLBENCH_FIND_LINKS path of the install scripts.

Everything here is printed, not run: no download, no network, no GPU (docs/dense.md, "Installing on a GPU machine
without a package index", has the measured real run).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
PYVER = f"{sys.version_info[0]}.{sys.version_info[1]}"
PYTAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"


def bash(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SSLBENCH_")}
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args], env={**base, **(env or {})}, capture_output=True, text=True
    )


def pip_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("+ ") and " -m pip " in line]


def test_bundle_dry_run_downloads_target_wheels_and_checks_the_size():
    res = bash("bundle_gpu.sh", "--dry-run", "--no-mmcv")
    assert res.returncode == 0, res.stderr
    (download,) = [line for line in pip_lines(res.stdout) if " -m pip download " in line]
    for option in (
        "--only-binary=:all:",
        "--python-version 3.12",
        "--implementation cp",
        "--platform manylinux_2_28_x86_64",
        "--no-deps",
        "-c requirements/constraints-dense.txt -c requirements/constraints.txt",
    ):
        assert option in download, option
    names = download.split(" requirements/constraints.txt ", 1)[1].split()
    for needed in ("opencv-python-headless", "pycocotools", "mmengine", "mmdet", "mmsegmentation", "shapely"):
        assert needed in names
    for build in ("setuptools", "wheel", "packaging", "pip>=24"):  # `pip install -e .` offline, setup_env's pip>=24
        assert build in names
    for image_has in ("torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "safetensors", "mmcv"):
        assert image_has not in names
    assert "xz --x86 --lzma2=preset=9e -T1 > dist/sslbench-gpu-cp312.tar.xz" in res.stdout
    assert "+ check: the size of dist/sslbench-gpu-cp312.tar.xz <= 67108864 bytes (64 MiB)" in res.stdout
    assert "cp scripts/bundle_gpu_install.sh " in res.stdout and "BUNDLE_MMCV=)" in res.stdout
    assert not (REPO / "dist" / ".bundle-gpu-work").exists()


def test_bundle_dry_run_files_the_mmcv_wheel_where_install_mm_looks(tmp_path):
    wheel = tmp_path / "torch-2.11.0" / "cuda" / "mmcv-2.1.0-cp313-cp313-linux_x86_64.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"")  # a dry run does not open it
    out = tmp_path / "b.tar.xz"
    res = bash("bundle_gpu.sh", "--dry-run", "--python", "3.13", "--mmcv", str(tmp_path), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "--python-version 3.13" in res.stdout
    assert f"mkdir -p {tmp_path}/.bundle-gpu-work/sslbench-gpu-bundle/wheels/torch-2.11.0/cuda" in res.stdout
    assert f"BUNDLE_MMCV=wheels/torch-2.11.0/cuda/{wheel.name})" in res.stdout
    assert f"> {out}" in res.stdout
    # a folder without a wheel for the target Python is an error, as is a missing path
    for target in (["--python", "3.12", "--mmcv", str(tmp_path)], ["--mmcv", str(tmp_path / "nope")]):
        res = bash("bundle_gpu.sh", "--dry-run", *target)
        assert res.returncode == 1 and res.stderr.startswith("bundle_gpu.sh: ")


@pytest.mark.parametrize(
    "args",
    [["--bogus"], ["--out"], ["--python", "three"], ["--mmcv", "x.whl", "--no-mmcv"], ["--out", "b.zip"]],
)
def test_bundle_bad_options_exit_2_with_one_line(args):
    res = bash("bundle_gpu.sh", "--dry-run", *args)
    assert res.returncode == 2
    assert res.stdout == "" and len(res.stderr.splitlines()) == 1 and res.stderr.startswith("bundle_gpu.sh: ")


def test_bundle_and_install_help():
    res = bash("bundle_gpu.sh", "--help")
    assert res.returncode == 0 and "--no-mmcv" in res.stdout and "--max-bytes" in res.stdout
    res = bash("bundle_gpu_install.sh", "--help")
    assert res.returncode == 0 and "--system-site-packages" in res.stdout and "SSLBENCH_FIND_LINKS" in res.stdout
    res = bash("bundle_gpu_install.sh", "--bogus")
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1


def test_setup_env_find_links_adds_no_index_to_every_pip_call(tmp_path):
    plain = bash("setup_env.sh", "--dry-run")
    assert plain.returncode == 0, plain.stderr
    assert pip_lines(plain.stdout) and not any("--no-index" in line for line in pip_lines(plain.stdout))
    res = bash("setup_env.sh", "--dry-run", env={"SSLBENCH_FIND_LINKS": str(tmp_path), "SSLBENCH_OWN_TORCH": "1"})
    assert res.returncode == 0, res.stderr
    lines = pip_lines(res.stdout)
    assert len(lines) == 2 and all(f"--no-index --find-links {tmp_path}" in line for line in lines)
    assert "scripts/constraints_offline.py .venv/tmp/constraints-own-torch.txt" in res.stdout
    assert "-c .venv/tmp/constraints-offline.txt -e .[dev]" in lines[1]
    res = bash("setup_env.sh", "--dry-run", env={"SSLBENCH_FIND_LINKS": str(tmp_path / "nope")})
    assert res.returncode == 2 and "is not a directory" in res.stderr


def test_install_mm_find_links_adds_no_index_to_every_pip_call(tmp_path):
    wheel = tmp_path / f"mmcv-2.1.0-{PYTAG}-{PYTAG}-linux_x86_64.whl"
    wheel.write_bytes(b"")
    env = {
        "SSLBENCH_VENV": sys.prefix,
        "SSLBENCH_MMCV_CUDA": "0",
        "SSLBENCH_MMCV_WHEEL_DIR": str(tmp_path),
        "SSLBENCH_FIND_LINKS": str(tmp_path),
    }
    res = bash("install_mm.sh", "--dry-run", env=env)
    assert res.returncode == 0, res.stderr
    lines = pip_lines(res.stdout)
    assert len(lines) == 4, lines  # helpers, mmcv (the prebuilt wheel, by path), mm packages, their dependencies
    assert all(f"-m pip install --no-index --find-links {tmp_path} " in line for line in lines)
    assert f"--no-deps --force-reinstall {wheel}" in lines[1]
    assert f"scripts/constraints_offline.py requirements/constraints.txt > {sys.prefix}/tmp/" in res.stdout
    assert "-c requirements/constraints.txt" not in lines[3]


def test_constraints_offline_drops_the_pins_of_installed_distributions(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("# a comment\npytest==0.0.1\nsslbench-surely-absent==1.0\nPyYAML>=1 ; python_version > '3'\n")
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "constraints_offline.py"), str(src)], capture_output=True, text=True, check=True
    ).stdout
    assert out == "# a comment\nsslbench-surely-absent==1.0\n"


def test_install_sh_dry_run_runs_setup_env_offline(tmp_path):
    bundle = tmp_path / "sslbench-gpu-bundle"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "bundle.env").write_text(f"BUNDLE_PYTHON={PYVER}\nBUNDLE_TORCH=0.0\nBUNDLE_MMCV=\n")
    install = bundle / "install.sh"
    install.write_text((SCRIPTS / "bundle_gpu_install.sh").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLBENCH_")}
    res = subprocess.run(
        ["bash", str(install), "--dry-run", str(REPO)],
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert f"SSLBENCH_OWN_TORCH=1 SSLBENCH_FIND_LINKS={bundle}/wheels" in res.stdout
    lines = pip_lines(res.stdout)
    assert lines and all(f"--no-index --find-links {bundle}/wheels" in line for line in lines)
    assert "no mmcv wheel" in res.stderr
    (bundle / "bundle.env").write_text("BUNDLE_PYTHON=2.7\nBUNDLE_TORCH=0.0\nBUNDLE_MMCV=\n")
    res = subprocess.run(
        ["bash", str(install), "--dry-run", str(REPO)],
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "Python 2.7" in res.stderr


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_store_wheels_keeps_every_member_and_refuses_a_cpu_only_mmcv(tmp_path):
    import zipfile

    store = [sys.executable, str(REPO / "scripts" / "store_wheels.py")]
    src, dst = tmp_path / "download", tmp_path / "wheels"
    dst.mkdir()
    members = {"pkg/__init__.py": b"x = 1\n" * 500, "pkg-1.0.dist-info/RECORD": b"pkg/__init__.py,,\n"}
    wheel = _zip(src / "pkg-1.0-py3-none-any.whl", members)
    manifest = tmp_path / "MANIFEST.txt"
    subprocess.run([*store, str(src), str(dst), str(manifest)], check=True, capture_output=True)
    with zipfile.ZipFile(dst / wheel.name) as z:
        assert {i.filename: z.read(i) for i in z.infolist()} == members
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    rows = manifest.read_text().splitlines()
    assert rows[0].startswith("#") and rows[1].split()[0] == str(wheel.stat().st_size)
    assert rows[1].split()[1] == str((dst / wheel.name).stat().st_size) and rows[1].endswith(wheel.name)

    cuda_dir = dst / "torch-2.11.0" / "cuda"
    cuda_dir.mkdir(parents=True)
    cpu_only = _zip(tmp_path / "cpu" / "mmcv-2.1.0-cp312-cp312-linux_x86_64.whl", {"mmcv/_ext.so": b"\0nms_cpu\0"})
    result = subprocess.run([*store, "--mmcv", str(cpu_only), str(cuda_dir), str(manifest), str(tmp_path)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "has no CUDA kernels" in result.stderr
    cuda = _zip(tmp_path / "gpu" / cpu_only.name, {"mmcv/_ext.so": b"\0_Z21NMSCUDAKernelLauncherv\0"})
    subprocess.run([*store, "--mmcv", str(cuda), str(cuda_dir), str(manifest), str(tmp_path)], check=True)
    assert manifest.read_text().splitlines()[-1].endswith("wheels/torch-2.11.0/cuda/" + cuda.name)


def test_prepare_gpu_bundle_plan_and_bad_options(tmp_path):
    script = str(REPO / "scripts" / "prepare_gpu_bundle.sh")
    venv = tmp_path / "venv"
    out = subprocess.run(["bash", script, "--python", sys.executable, "--venv", str(venv), "--dry-run"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert f"-m venv {venv}\n" in out and "pip install -q torch==2.11.0 torchvision" in out
    assert (
        f"SSLBENCH_VENV={venv} SSLBENCH_MMCV_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 SSLBENCH_MMCV_WHEEL_DIR={venv}/wheels"
        in out
    )
    assert f"--torch 2.11.0 --mmcv {venv}/wheels/torch-2.11.0/cuda --out dist/sslbench-gpu-{tag}.tar.xz" in out
    assert not venv.exists()  # a plan only
    for args in (["--arch"], ["--frobnicate"], ["--python", "no-such-python3.12"]):
        result = subprocess.run(["bash", script, *args], capture_output=True, text=True)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


def test_device_run_needs_a_bundle_file(tmp_path):
    script = str(REPO / "benchmarks" / "gpu" / "device_run.sh")
    result = subprocess.run(["bash", script, str(tmp_path / "missing.tar.xz"), str(tmp_path / "out")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "not a file" in result.stderr and not (tmp_path / "out").exists()


def test_every_script_the_makefile_runs_exists():
    text = (REPO / "Makefile").read_text()
    paths = set(re.findall(r"(?:scripts|benchmarks)/[\w/]+\.(?:py|sh)", text))
    benchmarks = re.search(r"^BENCHMARKS := (.+)$", text, re.M)
    assert benchmarks is not None
    paths |= {f"benchmarks/{name}.py" for name in benchmarks.group(1).split()}
    assert "benchmarks/knn.py" in paths and "scripts/setup_env.sh" in paths
    assert [p for p in sorted(paths) if not (REPO / p).is_file()] == []
