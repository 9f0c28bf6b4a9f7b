from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evaluate.cli import COMMANDS, GROUPS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sslbench(*args: str, env: dict | None = None, cwd: str = REPO) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sslbench_entry", *args], cwd=cwd, capture_output=True, text=True, env=full_env
    )


def test_top_level_help_lists_every_command():
    out = sslbench("--help")
    assert out.returncode == 0
    for name in list(COMMANDS) + list(GROUPS):
        assert name in out.stdout


def _leaves():
    yield from ([name] for name in COMMANDS)
    for group, (_, members) in GROUPS.items():
        yield from ([group, name] for name in members)


@pytest.mark.parametrize("words", list(_leaves()), ids=" ".join)
def test_every_subcommand_has_help(words, capsys):
    from evaluate.cli import main

    assert main([*words, "--help"]) == 0  # argparse's exit after the help becomes main's return status
    assert "usage: sslbench " + " ".join(words) in capsys.readouterr().out


def test_data_shapes_writes_and_reports(tmp_path):
    out = sslbench("data", "shapes", "--out", str(tmp_path / "sw"), "--size", "tiny", "--parts", "classification,davis")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["counts"]["classification"]["train"] > 0 and "davis" in report["counts"]
    assert (tmp_path / "sw" / "davis" / "ImageSets" / "2017" / "val.txt").is_file()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["data", "shapes", "--out", "{tmp}/sw", "--parts", "imagenet"], "unknown ShapesWorld part 'imagenet'"),
        (["data", "shapes", "--out", "{tmp}/sw", "--image-size", "4"], "--image-size 4: must be at least 16"),
        (["data", "shapes", "--out", "{tmp}/file.txt"], "file.txt is not a directory"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, args, fragment):
    (tmp_path / "file.txt").write_text("not a dataset")
    out = sslbench(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sslbench: error: ") and fragment in lines[0]
    assert (tmp_path / "file.txt").read_text() == "not a dataset"


def test_unknown_command_exits_nonzero():
    out = sslbench("frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_shadowing_package_is_reported_in_one_line(tmp_path):
    fake = tmp_path / "evaluate"
    fake.mkdir()
    (fake / "__init__.py").write_text("__version__ = '0.4.0'  # Hugging Face's evaluate, say\n")
    # the working directory comes first on sys.path, as a site-packages install of another 'evaluate' would
    out = sslbench("--help", env={"PYTHONPATH": REPO}, cwd=str(tmp_path))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "'evaluate' resolves to an unrelated package" in lines[0] and str(fake) in lines[0]
