"""Long work is not silent when piped (issue 22, item 5): with stdout not a terminal, progress
comes as plain lines on stderr while the command runs, and stdout keeps only the results."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from flowprof.cli.progress import Lines

ROOT = Path(__file__).resolve().parent.parent


def test_lines_say_steps_at_once_and_batches_at_most_every_period() -> None:
    now = [0.0]
    out = io.StringIO()
    lines = Lines("train x", every=30.0, stream=out, clock=lambda: now[0])
    assert lines.say("epoch 1: 128/512 samples", force=False)  # the first line is written
    now[0] = 10.0
    assert not lines.say("epoch 1: 256/512 samples", force=False)  # 10 s < 30 s
    assert lines.say("epoch 1/2 done")  # an epoch is said at once
    assert not lines.say("epoch 1/2 done")  # not twice
    now[0] = 35.0
    assert not lines.say("epoch 2: 128/512 samples", force=False)  # 25 s after the last line
    now[0] = 75.0
    assert lines.say("epoch 2: 384/512 samples", force=False)  # but 65 s after the last line
    assert out.getvalue().splitlines() == [
        "flowprof: train x: epoch 1: 128/512 samples (0:00)",
        "flowprof: train x: epoch 1/2 done (0:10)",
        "flowprof: train x: epoch 2: 384/512 samples (1:15)",
    ]


def test_train_piped_reports_each_epoch_while_it_runs(tmp_path) -> None:
    argv = ["train", "lenet5-modern", "--epochs", "3", "--train-samples", "512"]
    argv += ["--test-samples", "128", "--threads", "1", "--out", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,  # not a terminal
        stderr=subprocess.PIPE,
        text=True,
    )
    seen_running = []
    for line in proc.stderr:
        if "epoch" in line:
            seen_running.append((line.strip(), proc.poll() is None))
    stdout = proc.stdout.read()
    assert proc.wait() == 0, stdout
    done = [(line, running) for line, running in seen_running if " done in " in line]
    assert [line.split(" done")[0] for line, _ in done] == [
        f"flowprof: train lenet5-modern: epoch {e}/3" for e in (1, 2, 3)
    ]
    # the first epoch's line came while the process still had two epochs and the plots to do
    assert done[0][1] is True
    assert "done in" not in stdout  # progress is on stderr, not among the results


def test_report_piped_says_each_step(monkeypatch, capsys, tmp_path) -> None:
    # The report's work replaced by two steps, then a stop: what matters is what it says.
    from flowprof.analyses import assignment
    from flowprof.cli.main import main

    class Stop(Exception):
        pass

    def two_steps(quick, data_dir, progress):
        progress("Problem 1: shapes", 0, 2)
        progress("Problem 2: train lenet5: epoch 1 done", 1, 2)
        raise Stop

    monkeypatch.setattr(assignment, "run_assignment", two_steps)
    assert main(["report", "--out", str(tmp_path)]) == 1  # Stop, as an internal error
    captured = capsys.readouterr()  # stdout is not a terminal here
    said = [line for line in captured.err.splitlines() if line.startswith("flowprof: report:")]
    lines = [line.rsplit(" (", 1)[0] for line in said]  # without the elapsed time
    assert lines == [
        "flowprof: report: [0/2] Problem 1: shapes",
        "flowprof: report: [1/2] Problem 2: train lenet5: epoch 1 done",
    ]
    assert captured.out == ""
