"""Issue 17: ``method=module:Class`` imports only installed code, the checkout, or an explicit --plugin directory."""

from __future__ import annotations

import sys

import pytest

from sslcore.errors import ConfigError
from sslcore.plugins import import_object


@pytest.fixture
def rogue_cwd(tmp_path, monkeypatch):
    (tmp_path / "rogue_method_17.py").write_text("class Method:\n    pass\nTOUCHED = True\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend("")  # what `python -m` does: the working directory first on sys.path
    monkeypatch.delenv("PYTHONPATH", raising=False)
    yield tmp_path
    sys.modules.pop("rogue_method_17", None)


def test_code_in_the_working_directory_is_not_imported(rogue_cwd):
    with pytest.raises(
        ConfigError, match=r"method: 'rogue_method_17:Method': module 'rogue_method_17' is not installed"
    ):
        import_object("rogue_method_17:Method")
    assert "rogue_method_17" not in sys.modules


def test_an_explicit_plugin_directory_is_imported(rogue_cwd):
    assert import_object("rogue_method_17:Method", plugin_dirs=[rogue_cwd]).__name__ == "Method"


def test_installed_and_checkout_modules_are_imported():
    assert import_object("json:JSONDecoder").__name__ == "JSONDecoder"
    assert import_object("pretrain.methods.bam:BAM").__name__ == "BAM"
    with pytest.raises(ConfigError, match="has no 'Nope'"):
        import_object("json:Nope")
    with pytest.raises(ConfigError, match="is not 'package.module:Class'"):
        import_object("json")


def test_the_checkout_is_found_without_a_sys_path_entry_for_it(tmp_path):
    """An editable install imports the checkout through a finder hook: no sys.path entry names the repository
    (`make demo` from a fresh clone runs the console script that way, without PYTHONPATH)."""
    import os
    import subprocess

    from sslcore.io import REPO_ROOT

    code = (
        "import sys; root = sys.argv[1]; sys.path[:] = [p for p in sys.path if p not in ('', root)]; "
        "from sslcore.plugins import import_object; print(import_object('pretrain.methods.bam:BAM').__name__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    if "No module named 'sslcore'" in out.stderr:
        pytest.skip("sslbench is not installed in this interpreter (pip install -e .)")
    assert out.returncode == 0 and out.stdout.strip() == "BAM", out.stderr
