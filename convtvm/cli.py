"""The ``convtvm`` command line: check, tune, build, bench, report, prune-log, sweep-tiles, retarget-log,
device setup."""

from __future__ import annotations

import argparse
import ast
import sys
import time
import warnings
from pathlib import Path


def _value(text: str):
    """A parameter's value: a Python literal (3, (3, 3), 'same', True), true/false in any case as a
    boolean, anything else as the string itself."""
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _at_least(minimum: int, what: str):
    """argparse type: an integer >= ``minimum`` (``what`` names the rule in the message)."""
    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value
    return count


_positive = _at_least(1, "a positive integer")
_nonnegative = _at_least(0, "an integer >= 0")


def parse_params(items) -> dict:
    """["in_channels=64", "input_size=56,56", "padding=same"] -> kwargs."""
    params = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"parameter {item!r} must look like name=value (e.g. kernel_size=3)")
        key, _, val = item.partition("=")
        params[key.strip().replace("-", "_")] = _value(val)
    return params


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="x86", help="x86, arm or cuda (default x86)")
    p.add_argument("--arm-cpu", help="ARM: adds mcpu, e.g. cortex-a72, neoverse-n1")
    p.add_argument("--cuda-arch", default="sm_90", help="CUDA: sm_XX (default sm_90)")
    p.add_argument("--rpc", help="ARM: a TVM RPC server HOST:PORT (a real board); x86 tune: one server to measure on")
    p.add_argument("--rpc-tracker", help="a TVM RPC tracker HOST:PORT (ARM: a board; x86 tune: its servers measure)")
    p.add_argument("--rpc-key", help="the servers' key at the tracker")


def _target(args, tuning: bool = False):
    from .targets import resolve
    info = resolve(args.target, arm_cpu=args.arm_cpu, cuda_arch=args.cuda_arch)
    info.backend.connect(rpc=args.rpc, tracker=args.rpc_tracker, key=args.rpc_key, tuning=tuning)
    return info


def _workloads(args) -> dict:
    from . import suites
    from .variants import workload
    given = [g for g, v in (("a variant", getattr(args, "variant", None)), ("--suite", getattr(args, "suite", None)),
                            ("--file", getattr(args, "file", None))) if v]
    if len(given) > 1:
        raise ValueError(f"give one of a variant, --suite or --file, not {' and '.join(given)}")
    if getattr(args, "suite", None):
        return suites.suite(args.suite)
    if getattr(args, "file", None):
        return suites.load_file(args.file)  # ValueError naming the file and the workload
    if getattr(args, "variant", None):
        params = parse_params(args.params)
        try:
            w = workload(args.variant, **params)
        except TypeError as e:  # a value of the wrong type where the parameter's checks did not expect it
            raise ValueError(f"{args.variant} {' '.join(args.params)}: a parameter has the wrong type ({e})") from None
        return {args.variant: w}
    raise ValueError("name a variant (with name=value parameters), --suite NAME or --file FILE")


# ------------------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    from . import suites
    from .metrics import TOLERANCE, rel_err
    from .module import build
    info = _target(args)
    reps = suites.representative()
    names = args.variants or list(reps)
    unknown = [n for n in names if n not in reps]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}")
    runs = info.backend.has_device()
    print(f"convtvm check --target {info.kind} ({info.tag}){'' if runs else ': no GPU here, build only'}")
    header = f"{'variant':28s} {'input -> output':44s} {'schedule':9s} {'max rel err':>11s} {'build s':>8s} {'run ms':>8s}"
    print(header)
    print("-" * len(header))
    failed = 0
    for name in names:
        w = reps[name]
        t0 = time.time()
        m = build(w, info, tuning_log=args.log)
        t_build = time.time() - t0
        shape = f"{w.input_shapes[0]} -> {w.output_shape}"
        if not runs:
            print(f"{name:28s} {shape:44s} {m.schedule:9s} {'built':>11s} {t_build:8.2f} {'-':>8s}")
            continue
        xs = w.random_inputs(seed=int(time.time()) % 10000)
        t0 = time.time()
        y = m(*xs)
        t_run = (time.time() - t0) * 1e3
        ref = w.reference(*xs)
        err = rel_err(y, ref)
        ok = err <= TOLERANCE
        failed += not ok
        print(f"{name:28s} {shape:44s} {m.schedule:9s} {err:11.2e} {t_build:8.2f} {t_run:8.2f}"
              f"{'' if ok else '  FAIL'}")
    print(f"{len(names) - failed} of {len(names)} variants match torch (max rel err <= 1e-4)" if runs
          else f"{len(names)} variants built for {info.tag}")
    return 1 if failed else 0


def cmd_tune(args) -> int:
    from . import tune
    from .tuning.progress import for_stream
    info = _target(args, tuning=True)
    progress = for_stream(sys.stdout)  # a live status line on a terminal, plain lines otherwise
    try:
        if args.model:
            from .tuning.network import tune_model
            _model_only(args)
            tune_model(args.model, args.input_size, info, args.trials, args.log, trials_per_iter=args.trials_per_iter,
                       exit_on_sigint=True, heaviest=args.tasks, untuned=args.untuned, names=args.task,
                       progress=progress)
            return 0
        if args.tasks is not None or args.untuned or args.task:
            raise ValueError("--tasks, --task and --untuned choose among a model's tasks: give --model")
        ws = _workloads(args)
        warm = None
        if args.warm_start:
            from .tuning.warm import pretrained_cost_model
            warm = pretrained_cost_model(args.warm_start, info, progress=progress)
        tune(list(ws.values()), info, trials=args.trials, log=args.log, names=list(ws), weights=_torch_weights(ws, info),
             cost_model=warm,
             isolated=args.isolated, trials_per_iter=args.trials_per_iter, exit_on_sigint=True, progress=progress)
    except KeyboardInterrupt:
        print("\ninterrupted: every measured batch is already in the log", file=sys.stderr)
        return 130
    finally:
        getattr(progress, "close", lambda: None)()
    return 0


def _torch_weights(ws: dict, info) -> list | None:
    """Task weights for tuning several ops on a CPU torch runs on: 1 / torch's milliseconds, so the task
    scheduler spends trials where convtvm's time relative to torch falls fastest (a suite's goal is its
    geomean against torch), not where the milliseconds are. None for one op or a remote target."""
    if len(ws) < 2 or not info.backend.runs_in_process():
        return None
    from .bench.ops import torch_ms
    print(f"timing torch on {len(ws)} ops to weight the tasks (1 / torch ms)")
    return [1.0 / max(ms, 1e-6) for ms in torch_ms(ws).values()]


def _model_only(args) -> None:
    """ValueError when a command is given --model and a variant, --suite or --file too."""
    extra = [f"--{k}" for k in ("suite", "file") if getattr(args, k, None)] + (["a variant"] if args.variant else [])
    if extra:
        raise ValueError(f"--model compiles a whole network: give it without {' or '.join(extra)}")


def cmd_build(args) -> int:
    from .module import build
    info = _target(args)
    if args.model:
        return _build_model(args, info)
    ws = _workloads(args)
    out = Path(args.output)
    single = len(ws) == 1 and out.suffix == ".so" and not out.is_dir()  # an existing folder is a folder
    if not single and out.exists() and not out.is_dir():
        raise ValueError(f"-o {out} is a file: give a folder for {len(ws)} workloads (or NAME.so for one)")
    for name, w in ws.items():
        path = out if single else out / f"{name}.so"
        print(f"building {w} for {info.tag} ...", flush=True)
        m = build(w, info, tuning_log=args.log)
        m.export(path)
        print(f"  {m.schedule} schedule -> {path} (+ {path.name}.json)")
    return 0


def _build_model(args, info) -> int:
    """``convtvm build --model NAME|FILE [-o NET.so | -o FOLDER]``: compile_model + export."""
    from .network import compile_model
    from .tuning.network import describe_inputs, model_and_input
    _model_only(args)
    model, xs = model_and_input(args.model, args.input_size)
    out = Path(args.output)
    path = out if out.suffix == ".so" and not out.is_dir() else out / f"{Path(args.model).stem}.so"
    print(f"compiling {describe_inputs(args.model, args.input_size, xs)} for {info.tag} ...", flush=True)
    net = compile_model(model, xs, info, tuning_log=args.log)
    net.export(path)
    how = ", ".join(f"{k} {v}" for k, v in sorted(net.schedules.items()))
    print(f"  {sum(net.schedules.values())} TIR functions ({how}) -> {path} (+ {path.name}.json)")
    return 0


def cmd_bench(args) -> int:
    from .bench import results
    info = _target(args)
    if args.model:
        from .bench.network import bench_model
        _model_only(args)
        result = bench_model(args.model, args.input_size, info, args.log, rounds=args.rounds)
    else:
        from .bench.gpu import bench_ops_cuda
        from .bench.ops import bench_ops, table
        run = bench_ops_cuda if info.kind == "cuda" else bench_ops  # CUDA events on the GPU
        result = run(_workloads(args), info, log=args.log, rounds=args.rounds)
        print()
        print(table(result))
    name = Path(args.model).stem if args.model else args.suite or "ops"
    out = Path(args.output or f"results/{info.tag}-{name}.json")
    results.write(out, result)
    print(f"\nresults written to {out}")
    return 0


def cmd_report(args) -> int:
    from .report import render_report
    html, md = render_report(args.results, args.output)
    print(f"wrote {html} and {md}")
    return 0


def cmd_prune(args) -> int:
    import shutil
    import tempfile

    from . import suites
    from .records.log import TuningLog
    from .tuning.maintain import merge, prune
    if args.into and args.output:
        raise ValueError("give either --output (a pruned copy) or --into (merge the pruned records into a log)")
    if args.in_network and not args.model:
        raise ValueError("--in-network picks a model's records in that model: give --model too")
    ws = suites.suite(args.suite) if args.suite else None
    keep = max(args.keep, args.in_network or 0)  # candidates for the in-network choice
    if args.model:
        from .tuning.network import model_and_input
        model, xs = model_and_input(args.model, args.input_size)
    with tempfile.TemporaryDirectory(prefix="convtvm_prune_") as tmp:
        incumbent = None  # the records in use before a merge: rank 0 of the in-network choice
        if args.in_network and args.into and TuningLog(args.into).has_records():
            incumbent = shutil.copytree(args.into, Path(tmp) / "incumbent")
        if args.model and args.into:  # the model's records alone, and its trial count beside them
            from .network import import_model, lower
            from .tuning.network import extract_tasks, merge_task_records, model_trials_key
            info = TuningLog(args.log).target()
            tasks = extract_tasks(lower(import_model(model, xs), info), info)
            n, trials = merge_task_records(args.log, args.into, tasks, model_trials_key(args.model, args.input_size),
                                           keep=keep, retime=args.retime)
            print(f"kept {n} records of {args.model}'s tasks ({trials} trials), merged into {args.into}")
        elif not args.into:
            n = prune(args.log, keep=keep, out=args.output, workloads=ws, retime=args.retime, only=args.only)
            print(f"kept {n} records in {args.output or args.log}")
        else:
            pruned = Path(tmp) / "pruned"
            n = prune(args.log, keep=keep, out=pruned, workloads=ws, retime=args.retime, only=args.only)
            merge(pruned, args.into)
            print(f"kept {n} records, merged into {args.into}")
        if args.in_network:
            from .tuning.network import pick_in_network
            result = Path(args.into or args.output or args.log)
            pick_in_network(model, xs, TuningLog(result).target(), result, candidates=args.in_network,
                            incumbent=incumbent)
            print(f"{args.model}'s tasks keep the record that ran fastest in the network, in {result}")
    return 0


def cmd_sweep(args) -> int:
    from .network import import_model, lower
    from .records.log import TuningLog
    from .tuning.network import extract_tasks, model_and_input, model_trials_key, recorded_trials
    from .tuning.retile import sweep
    if args.tasks < 1:
        raise ValueError(f"--tasks={args.tasks} must be positive")
    log = Path(args.log)
    info = TuningLog(log).target()
    model, xs = model_and_input(args.model, args.input_size)
    tasks = extract_tasks(lower(import_model(model, xs), info), info)
    timed = 0
    for t in tasks[:args.tasks]:  # heaviest first: calls x FLOPs
        timed += len(sweep(log, t.mod, name=t.name, keep=args.keep, rounds=args.rounds)) - 1
    key = model_trials_key(args.model, args.input_size)
    trials = (recorded_trials(log, key) or 0) + timed  # each candidate timed is a trial
    TuningLog(log).record_trials({key: trials})
    print(f"{timed} candidates timed; {key}: {trials} trials")
    return 0


def cmd_retarget(args) -> int:
    from .targets import resolve
    from .tuning.maintain import retarget
    info = resolve(args.target, num_cores=args.num_cores)
    n = retarget(args.log, info, args.output)
    print(f"carried {n} records of {args.log} over to {info.tag}")
    return 0


def cmd_device(args) -> int:
    if args.action != "setup" or args.device != "arm-emulated":
        raise ValueError("usage: convtvm device setup arm-emulated")
    from .backends import arm_runtime
    arm_runtime.setup(verbose=True)
    return 0


def _one_line(e: BaseException) -> str:
    """An error as one line: its message's first line (TVM's run to many), with the exception's type
    unless it is one convtvm raises for bad input."""
    lines = [ln.strip() for ln in str(e).strip().splitlines()
             if ln.strip() and not ln.lstrip().startswith(("Traceback", "File \""))]
    text = lines[0] if lines else ""
    if isinstance(e, (ValueError, FileNotFoundError)) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _warning_printer(cmd: str, show):
    """warnings.showwarning that prints a skipped tuning log line as one line of its own."""
    def printer(message, category, filename, lineno, file=None, line=None):
        if category.__name__ == "LogWarning":
            print(f"convtvm {cmd}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return printer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="convtvm", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback")
    debug = argparse.ArgumentParser(add_help=False)  # --debug after the command too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, show its traceback")
    sub = parser.add_subparsers(dest="cmd", required=True)

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[debug], **kw)

    p = command("check", help="build every variant on representative shapes and compare with torch")
    _target_args(p)
    p.add_argument("--log", help="tuning log directory to take tuned schedules from")
    p.add_argument("variants", nargs="*", help="only these variants")
    p.set_defaults(fn=cmd_check)

    for verb, fn, hlp in (("tune", cmd_tune, "auto-schedule with MetaSchedule"),
                          ("build", cmd_build, "compile to .so + manifest"),
                          ("bench", cmd_bench, "time against PyTorch, write JSON results")):
        p = command(verb, help=hlp)
        _target_args(p)
        p.add_argument("variant", nargs="?", help="a variant name (see convtvm.variants())")
        p.add_argument("params", nargs="*", help="name=value parameters, e.g. in_channels=64 input_size=56,56")
        p.add_argument("--suite", help="a named suite: ansor, extras, all")
        p.add_argument("--file", help="a JSON file of workloads")
        p.add_argument("--log", help="tuning log directory (default tuning_logs/<target tag>)")
        p.add_argument("--model", metavar="NAME|FILE",
                       help="a network: a named one (efficientnet_v2_s, ...) or a file: a .pt2 ExportedProgram "
                            "(torch.export.save, with its example inputs) or an .onnx model")
        p.add_argument("--input-size", type=_positive,
                       help="a named model's input size (default 224); a file's inputs define its shapes "
                            "(.pt2: the saved example inputs; .onnx: the graph's, a symbolic dimension as 1)")
        if verb == "tune":
            p.add_argument("--trials", type=_positive, default=64, help="measured trials in all (default 64)")
            p.add_argument("--trials-per-iter", type=_positive, default=32,
                           help="candidates measured per batch (default 32)")
            p.add_argument("--isolated", action="store_true",
                           help="compile and measure in worker processes (safer, slower)")
            p.add_argument("--tasks", type=_positive, help="with --model: only its N heaviest tasks (calls x FLOPs)")
            p.add_argument("--untuned", action="store_true",
                           help="with --model: only its tasks that the log has no record for")
            p.add_argument("--task", action="append", metavar="NAME",
                           help="with --model: only this task (as the task list names it); repeatable")
            p.add_argument("--warm-start", action="append", metavar="LOG",
                           help="train the cost model on this working log's records before searching; repeatable")
        if verb == "build":
            p.add_argument("-o", "--output", default="build",
                           help="output .so (one workload, or --model) or folder (default build)")
        if verb == "bench":
            p.add_argument("--rounds", type=_positive, default=15, help="interleaved timing rounds (median)")
            p.add_argument("-o", "--output", help="result JSON (default results/<target>-<suite>.json)")
        p.set_defaults(fn=fn)

    p = command("report", help="render bench results as report.html + report.md")
    p.add_argument("results", nargs="+")
    p.add_argument("-o", "--output", required=True, help="output folder, e.g. reports/x86")
    p.set_defaults(fn=cmd_report)

    p = command("prune-log", help="keep only the best records of a tuning log")
    p.add_argument("log")
    p.add_argument("--keep", type=_positive, default=1, help="records kept per workload (default 1)")
    p.add_argument("--retime", type=_nonnegative, default=0,
                   help="time each workload's N best records again, interleaved, and keep the fastest "
                        "(on a quiet machine: the search's own timings are noisy under load); with --suite, "
                        "each suite workload's fallback schedule competes too")
    p.add_argument("--suite", help="also record trials and tuning curves for this suite's workloads")
    p.add_argument("--only", action="store_true", help="with --suite: keep no records of other tasks")
    p.add_argument("-o", "--output", help="write the pruned log here instead of rewriting LOG")
    p.add_argument("--into", help="merge the pruned records into this log (e.g. tuning_logs/x86-znver3)")
    p.add_argument("--model", help="with --into: merge only this model's tasks' records (e.g. efficientnet_v2_s) "
                                   "and add LOG's trials that INTO does not already hold to its trial count")
    p.add_argument("--input-size", type=_positive,
                   help="with a named --model: the input size it was tuned at (default 224)")
    p.add_argument("--in-network", type=_positive, metavar="K",
                   help="with --model: of each of its tasks' K best records, keep the one whose kernel runs "
                        "fastest in the compiled network (profiled; on a quiet machine); with --into, the "
                        "record INTO used before the merge is one of the K and stays unless clearly beaten")
    p.set_defaults(fn=cmd_prune)

    p = command("sweep-tiles", help="time every register tile around a model's records; add the faster ones")
    p.add_argument("log")
    p.add_argument("--model", required=True, help="e.g. efficientnet_v2_s, or a .pt2 / .onnx file")
    p.add_argument("--input-size", type=_positive, help="a named model's input size (default 224)")
    p.add_argument("--tasks", type=_positive, default=8, help="the N heaviest tasks (calls x FLOPs)")
    p.add_argument("--keep", type=_positive, default=2, help="records added per task, at most")
    p.add_argument("--rounds", type=_positive, default=7, help="interleaved timing rounds")
    p.set_defaults(fn=cmd_sweep)

    p = command("retarget-log", help="carry a log's best records over to this machine's CPU (each "
                                            "replayed, checked and timed here)")
    p.add_argument("log", help="e.g. tuning_logs/x86-znver3")
    p.add_argument("--target", default="x86")
    p.add_argument("--num-cores", type=_positive)
    p.add_argument("-o", "--output", help="the log to merge them into (default tuning_logs/<target tag>)")
    p.set_defaults(fn=cmd_retarget)

    p = command("device", help="set up a device: convtvm device setup arm-emulated")
    p.add_argument("action")
    p.add_argument("device")
    p.set_defaults(fn=cmd_device)

    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(args.cmd, warnings.showwarning)
            return args.fn(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\nconvtvm {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the command line shows an error as one line, not a traceback
        if args.debug:
            raise
        hint = "" if isinstance(e, (ValueError, FileNotFoundError)) else " (--debug shows the traceback)"
        print(f"convtvm {args.cmd}: error: {_one_line(e)}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
