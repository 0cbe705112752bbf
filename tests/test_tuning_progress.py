"""What `convtvm tune` shows: one live status line on a terminal, plain lines otherwise."""

import io
import math

import convtvm
from convtvm.tuning.progress import LiveProgress, ProgressLine, for_stream, status_text


def _line(done, total=100, elapsed=60.0, best_s=0.002, first_s=0.005):
    return ProgressLine(f"  [{elapsed:6.0f}s] conv: {done} trials", done=done, total=total, elapsed=elapsed,
                        task="conv", best_s=best_s, first_s=first_s, gflops=12.5)


def test_the_status_gives_trials_rate_best_and_time_left():
    text = status_text(_line(25), width=200)
    assert "25/100 trials, 25.0/min, 1m00s elapsed, ~3m00s left" in text
    assert "conv: best 2 ms, 12.5 GFLOP/s, 2.50x its first" in text
    assert text.startswith("[#####...............]")
    assert "no candidate ran yet" in status_text(_line(3, best_s=math.inf, first_s=math.inf))
    assert len(status_text(_line(25), width=50)) == 50


def test_a_terminal_gets_one_line_rewritten_and_messages_above_it():
    out = io.StringIO()
    live = LiveProgress(out, width=200)
    live(_line(10))
    live("  2 of 32 candidates failed; first: ...")
    live(_line(20))
    live.close()
    text = out.getvalue()
    assert text.count("\r\033[K") == 3 and text.endswith("\n")
    assert "  2 of 32 candidates failed; first: ...\n[" in text  # the message, then the status again
    assert "20/100 trials" in text.rsplit("\r\033[K", 1)[1]


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_without_a_terminal():
    assert for_stream(io.StringIO()) is print
    assert isinstance(for_stream(_Tty()), LiveProgress)
    line = _line(10)
    assert str(line) == "  [    60s] conv: 10 trials"  # as printed to a log file or CI


def test_the_engine_reports_each_batch_as_a_progress_line(tmp_path):
    w = convtvm.workload("conv2d", in_channels=4, out_channels=8, input_size=(8, 8), kernel_size=3, layout="NHWC")
    seen = []
    convtvm.tune(w, "x86", trials=4, log=tmp_path / "log", trials_per_iter=4, seed=0, progress=seen.append)
    lines = [m for m in seen if isinstance(m, ProgressLine)]
    assert lines and all(p.total == 4 and 0 < p.done <= 4 and p.elapsed >= 0 for p in lines)
    assert lines[-1].best_s <= lines[-1].first_s and lines[-1].gflops > 0
    assert all(str(p).startswith("  [") for p in lines)
