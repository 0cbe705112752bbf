"""The command line on bad input (issue #31): one line ``convtvm <cmd>: error: ...`` on stderr and
exit status 2, never a traceback (``--debug`` shows it); counts checked by argparse; true/false
parameters; an existing folder as ``-o``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convtvm import cli
from convtvm.cli import main, parse_params

SMALL = ["conv2d", "in_channels=4", "out_channels=4", "input_size=8,8"]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "hello.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    (tmp_path / "afile").write_text("not a log\n")
    return tmp_path


def one_error_line(capsys, cmd: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"convtvm {cmd}: error: "), err
    return lines[0]


@pytest.mark.parametrize("args,cmd,message", [
    (["build", "--file", "{tmp}/hello.json"], "build", "hello.json: workload 'hello' must be an object"),
    (["build", "--file", "{tmp}/list.json"], "build", "list.json: workload 'w0' must be an object"),
    (["tune", *SMALL, "--trials", "2", "--log", "{tmp}/afile"], "tune", "afile must be a folder"),
    (["build", *SMALL, "--log", "{tmp}/afile", "-o", "{tmp}/out"], "build", "afile must be a folder"),
    (["check", "--log", "{tmp}/afile", "avg_pool2d"], "check", "afile must be a folder"),
    (["build", "conv2d", "kernel_size=3.0", "-o", "{tmp}/out"], "build", "kernel_size=3.0"),
    (["build", "--suite", "ansor", "-o", "{tmp}/afile"], "build", "-o {tmp}/afile is a file: give a folder"),
    (["build", *SMALL, "--target", "arm", "--arm-cpu", "notacpu", "-o", "{tmp}/out"], "build",
     "mcpu='notacpu' is not a CPU that LLVM knows for aarch64"),
    (["build", "conv2d", "--suite", "ansor", "-o", "{tmp}/out"], "build",
     "give one of a variant, --suite or --file, not a variant and --suite"),
    (["tune", *SMALL, "--trials", "2", "--rpc-tracker", "127.0.0.1:9", "--rpc-key", "x"], "tune",
     "--rpc-tracker 127.0.0.1:9: nothing answers there"),
    (["tune", *SMALL, "--trials", "2", "--rpc-tracker", "127.0.0.1:9"], "tune",
     "--rpc-tracker needs --rpc-key"),
    (["tune", *SMALL, "--trials", "2", "--rpc-key", "x"], "tune", "--rpc-key names the servers at a tracker"),
    (["build", *SMALL, "-o", "{tmp}/out", "--rpc-tracker", "127.0.0.1:9", "--rpc-key", "x"], "build",
     "--rpc-tracker, --rpc-key: x86 modules run on this machine; only `convtvm tune` measures on x86 RPC servers"),
])
def test_a_user_error_is_one_line_and_status_2(files, capsys, args, cmd, message):
    args = [a.replace("{tmp}", str(files)) for a in args]
    assert main(args) == 2
    assert message.replace("{tmp}", str(files)) in one_error_line(capsys, cmd)


def test_any_exception_is_one_line_and_debug_shows_the_traceback(files, capsys, monkeypatch):
    def boom(args):
        raise KeyError("somewhere inside")

    monkeypatch.setattr(cli, "cmd_report", boom)
    assert main(["report", "x.json", "-o", str(files / "r")]) == 2
    assert "KeyError: 'somewhere inside' (--debug shows the traceback)" in one_error_line(capsys, "report")
    for argv in (["--debug", "report", "x.json", "-o", "r"], ["report", "x.json", "-o", "r", "--debug"]):
        with pytest.raises(KeyError, match="somewhere inside"):
            main(argv)
    with pytest.raises(ValueError, match="workload 'hello' must be an object"):
        main(["build", "--file", str(files / "hello.json"), "--debug"])


def test_a_multi_line_error_shows_its_first_line(capsys, monkeypatch):
    def tvm_like(args):
        raise RuntimeError("Check failed: st < ed (0 vs. 0) :\nStack trace:\n  File \"x.cc\", line 3\n")

    monkeypatch.setattr(cli, "cmd_report", tvm_like)
    assert main(["report", "x.json", "-o", "r"]) == 2
    assert one_error_line(capsys, "report").endswith("RuntimeError: Check failed: st < ed (0 vs. 0) : "
                                                     "(--debug shows the traceback)")


def test_ctrl_c_exits_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_report", interrupted)
    try:
        status = main(["report", "x.json", "-o", "r"])
    except KeyboardInterrupt:  # (not let through: it would stop the test session)
        pytest.fail("main() let KeyboardInterrupt through instead of exiting 130")
    assert status == 130
    assert "convtvm report: interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("args,option", [
    (["tune", *SMALL, "--trials-per-iter", "0"], "--trials-per-iter"),
    (["tune", *SMALL, "--trials", "0"], "--trials"),
    (["tune", "--model", "efficientnet_v2_s", "--tasks", "0"], "--tasks"),
    (["bench", *SMALL, "--rounds", "0"], "--rounds"),
    (["bench", *SMALL, "--rounds", "-3"], "--rounds"),
    (["tune", *SMALL, "--trials", "many"], "--trials"),
    (["sweep-tiles", "log", "--model", "efficientnet_v2_s", "--tasks", "0"], "--tasks"),
    (["prune-log", "log", "--keep", "0"], "--keep"),
    (["prune-log", "log", "--retime", "-1"], "--retime"),
])
def test_counts_must_be_positive_integers(capsys, args, option):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: must be" in err and "Traceback" not in err


def test_true_and_false_parse_as_booleans():
    assert parse_params(["bias=false", "b=TRUE", "c=True", "d=False", "e=3", "f=8,8", "g=same"]) == \
        {"bias": False, "b": True, "c": True, "d": False, "e": 3, "f": (8, 8), "g": "same"}


def test_bias_false_builds_a_conv_without_bias(tmp_path, capsys):
    assert main(["build", *SMALL, "bias=false", "-o", str(tmp_path / "c.so")]) == 0
    manifest = json.loads((tmp_path / "c.so.json").read_text())
    assert manifest["workload"]["bias"] is False


def test_an_existing_folder_named_like_a_library_is_a_folder(tmp_path, capsys):
    """``-o out.so`` where out.so is a folder: the one library goes into it (it used to fail
    replacing the folder)."""
    out = tmp_path / "out.so"
    out.mkdir()
    assert main(["build", *SMALL, "-o", str(out)]) == 0
    assert (out / "conv2d.so").is_file() and (out / "conv2d.so.json").is_file()
    assert "out.so/conv2d.so" in capsys.readouterr().out


def test_the_installed_command_prints_no_traceback(files):
    exe = Path(sys.executable).with_name("convtvm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "convtvm.cli"]
    proc = subprocess.run([*cmd, "build", "--file", str(files / "hello.json")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("convtvm build: error: ")
