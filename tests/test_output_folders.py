"""A command's output folder holds one run's whole set of files, whatever happens
(flowprof.atomic.atomic_dir): a rerun leaves no stale file, a kill mid-write leaves the old set,
two runs into one folder leave one of them, and a folder with files flowprof did not write is
refused rather than replaced."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowprof import atomic
from flowprof.errors import OutputFolderError

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = atomic.MANIFEST


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the SHA-256 of its content."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def consistent(folder: Path) -> dict:
    """The folder's manifest, after checking that it lists exactly the files there."""
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(snapshot(folder)) - {MANIFEST} == set(manifest["files"])
    return manifest


# --- the library -------------------------------------------------------------------------------


def test_atomic_dir_replaces_the_whole_set(tmp_path):
    target = tmp_path / "out"
    with atomic.atomic_dir(target, {"run": 1}) as staging:
        (staging / "a.txt").write_text("A1")
        (staging / "old-only.txt").write_text("x")
        assert not target.exists()  # nothing shows before the end
    assert consistent(target)["run"] == 1
    with atomic.atomic_dir(target, {"run": 2}) as staging:
        (staging / "a.txt").write_text("A2")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.txt").write_text("B2")
    assert set(snapshot(target)) == {"a.txt", "sub/b.txt", MANIFEST}
    assert (target / "a.txt").read_text() == "A2"
    assert consistent(target)["run"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left


def test_an_error_mid_run_leaves_the_old_set(tmp_path):
    target = tmp_path / "out"
    with atomic.atomic_dir(target) as staging:
        (staging / "a.txt").write_text("old")
    before = snapshot(target)
    with pytest.raises(KeyboardInterrupt), atomic.atomic_dir(target) as staging:
        (staging / "a.txt").write_text("new")
        raise KeyboardInterrupt
    assert snapshot(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_with_files_flowprof_did_not_write_is_refused(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(
        OutputFolderError, match=r"holds files flowprof did not write \(notes.txt\)"
    ):
        atomic.check_replaceable(mine)
    # a flowprof folder to which the user added a file: also refused
    target = tmp_path / "out"
    with atomic.atomic_dir(target) as staging:
        (staging / "a.txt").write_text("A")
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(OutputFolderError), atomic.atomic_dir(target):
        pass
    assert (target / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        atomic.check_replaceable(tmp_path / "file")


def test_staging_folders_of_killed_runs_are_removed(tmp_path):
    target = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f".out.flowprof-{dead.stdout.strip()}-abcd"
    stale.mkdir()
    (stale / "blocks.csv").write_text("half")
    live = tmp_path / f".out.flowprof-{os.getpid()}-efgh"  # a run still going: kept
    live.mkdir()
    with atomic.atomic_dir(target) as staging:
        (staging / "a.txt").write_text("A")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name])


# --- the CLI -----------------------------------------------------------------------------------


def test_a_rerun_leaves_no_file_of_the_earlier_run(tmp_path):
    out = tmp_path / "out"
    first = cli(
        "trace", "lenet5", "--diagram", "none", "--view", "--model-explorer", "--out", str(out)
    )
    assert first.returncode == 0, first.stderr
    assert (out / "view.html").exists() and (out / "model-explorer" / "graph.json").exists()
    again = cli("trace", "lenet5-dws", "--diagram", "none", "--out", str(out))
    assert again.returncode == 0, again.stderr
    # the contract files of the second run, and nothing else
    assert set(snapshot(out)) == {"blocks.csv", "edges.csv", "graph.json", MANIFEST}
    assert consistent(out)["argv"][1] == "lenet5-dws"
    assert json.loads((out / "graph.json").read_text())["meta"]["model"] == "lenet5-dws"


def test_the_cli_refuses_a_folder_of_the_users_before_the_work(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    out = cli("trace", "lenet5", "--out", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"flowprof: error: output folder {tmp_path} holds files flowprof did not write "
        "(notes.txt), which replacing it would delete: give a new or empty folder, or remove them"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _trace_argv(emb: int, out: Path) -> list[str]:
    return [
        sys.executable, str(ROOT / "cli.py"), "trace", "transformer", "--emb", str(emb),
        "--seq-len", "8", "--diagram", "none", "--view", "--model-explorer", "--out", str(out),
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL timing, Linux paths")
def test_a_kill_mid_write_leaves_the_old_set(tmp_path):
    out = tmp_path / "out"
    assert subprocess.run(_trace_argv(64, out), cwd=ROOT, capture_output=True).returncode == 0
    old = snapshot(out)
    # Kill the next run right after it wrote its blocks.csv (the moment of the report),
    # then at the middle of its writes (its model-explorer files).
    for marker in ("blocks.csv", "model-explorer/graph.json"):
        proc = subprocess.Popen(_trace_argv(128, out), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(f".out.flowprof-{proc.pid}-*/{marker}")):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended first"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert snapshot(out) == old  # the old set, whole
        consistent(out)
    # the next run replaces it whole, and clears what the killed runs left
    assert subprocess.run(_trace_argv(128, out), cwd=ROOT, capture_output=True).returncode == 0
    assert json.loads((out / "graph.json").read_text())["meta"]["config"]["emb"] == 128
    consistent(out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.slow
@pytest.mark.multiproc
def test_concurrent_runs_into_one_folder_leave_one_whole_set(tmp_path):
    out = tmp_path / "out"
    for attempt in range(3):
        procs = [
            subprocess.Popen(
                _trace_argv(emb, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )  # fmt: skip
            for emb in (64, 96)
        ]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
        manifest = consistent(out)
        emb = int(manifest["argv"][manifest["argv"].index("--emb") + 1])
        # every file is of that run: the graph's config, the residual stream's shape in
        # edges.csv (batch 1 x seq 8 x emb), the view's data, Model Explorer's graph
        assert json.loads((out / "graph.json").read_text())["meta"]["config"]["emb"] == emb
        assert f",1x8x{emb}," in (out / "edges.csv").read_text()
        other = 96 if emb == 64 else 64  # (no tensor of one run has the other's last size:
        # emb 64's FFN is 256 wide, emb 96's 384; their heads are 8 and 12 wide)
        assert not re.search(rf"1x8x{other}\b", (out / "edges.csv").read_text())
        assert not re.search(rf"1x8x{other}\b", (out / "view.html").read_text())
        assert f"1x8x{emb}" in (out / "model-explorer" / "graph.json").read_text()
        assert [p.name for p in tmp_path.iterdir()] == ["out"], attempt
