"""A clean install adds one import name, ``flowprof``, and works beside a user's own ``models``
and ``distributed`` packages (folders that many ML repositories have; ``distributed`` is also
Dask's package name).

The fresh venv borrows the test environment's installed packages through a .pth file, so pip
resolves torch and the rest without downloading 5 GB; flowprof itself is built from the checkout
and installed as a wheel (not editable), as a user's ``pip install`` would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # A copy of the checkout's sources: building a wheel writes build/ and *.egg-info beside them.
    source = tmp_path_factory.mktemp("source") / "flowprof"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "data", "out", "build", "*.egg-info"),
    )
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return venv


def test_the_distribution_adds_one_import_name(installed):
    info = list(installed.glob("lib/python*/site-packages/flowprof-*.dist-info"))
    assert len(info) == 1
    assert (info[0] / "top_level.txt").read_text().split() == ["flowprof"]
    assert "flowprof = flowprof.cli:main" in (info[0] / "entry_points.txt").read_text()


def test_works_beside_a_users_models_and_distributed_packages(installed, tmp_path):
    for name in ("models", "distributed"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHO = 'the user\\'s {name}'\n")
    code = (
        "import flowprof, models, distributed\n"
        "import flowprof.models.registry, flowprof.distributed\n"
        "print(models.WHO); print(distributed.WHO)\n"
        "print(flowprof.__file__)"
    )
    python = str(installed / "bin" / "python")
    out = subprocess.run(
        [python, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[:2] == ["the user's models", "the user's distributed"]
    assert Path(out[2]).is_relative_to(installed)  # the installed wheel, not the checkout

    trace = subprocess.run(
        [str(installed / "bin" / "flowprof"), "trace", "transformer", "--emb", "64"]
        + ["--format", "csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert trace.returncode == 0, trace.stderr
    header = trace.stdout.splitlines()[0]
    assert header.startswith("block,kind,macs,multiplications,additions,other,params")
    # The first query projection at emb 64, seq 128: 128 x 64 dot products of length 64.
    q_proj = next(r for r in trace.stdout.splitlines() if "self_attn.q_proj," in r).split(",")
    assert int(q_proj[2]) == 128 * 64 * 64

    as_module = subprocess.run(
        [python, "-m", "flowprof", "models"], cwd=tmp_path, capture_output=True, text=True
    )
    assert as_module.returncode == 0 and "transformer" in as_module.stdout


def test_an_installed_copy_keeps_its_data_in_the_users_cache(installed, tmp_path):
    # Not site-packages/data (issue 22, item 8): $XDG_CACHE_HOME/flowprof, else ~/.cache/flowprof.
    import os

    code = "from flowprof.training.mnist import default_data_root; print(default_data_root())"
    python = str(installed / "bin" / "python")
    drop = ("FLOWPROF_DATA", "XDG_CACHE_HOME", "PYTHONPATH")  # the installed copy, not a checkout
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["HOME"] = str(tmp_path / "home")

    def root(**extra: str) -> Path:
        out = subprocess.run(
            [python, "-c", code], cwd=tmp_path, env=env | extra, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return Path(out.stdout.strip())

    assert root() == tmp_path / "home" / ".cache" / "flowprof"
    assert root(XDG_CACHE_HOME=str(tmp_path / "xdg")) == tmp_path / "xdg" / "flowprof"
    assert root(FLOWPROF_DATA=str(tmp_path / "mine")) == tmp_path / "mine"
