"""convtvm: every convolution variant as a TVM TE compute, auto-scheduled with MetaSchedule,
compiled, checked against PyTorch.

    import convtvm
    w = convtvm.workload("conv2d", in_channels=64, out_channels=64, input_size=(56, 56), padding=1)
    m = convtvm.build(w, target="x86")
    y = m(*w.random_inputs())
"""

from .version import __version__  # noqa: E402
from .targets import check_target_options, configure_cpu_threads  # noqa: E402

configure_cpu_threads()

from .variants import Workload, variants, workload  # noqa: E402


def build(w, target="x86", tuning_log=None, **target_options):
    """Compile a Workload; see :func:`convtvm.module.build`. ``target_options``: arm_cpu, cuda_arch,
    num_cores (``convtvm.targets.resolve``); any other keyword is a ValueError."""
    from .module import build as _build
    check_target_options(target_options, "convtvm.build", ("target", "tuning_log"))
    return _build(w, target, tuning_log, **target_options)


def load(path):
    """Load an export: a single op (a ``Module``) or a network (a ``Model``), as its manifest says.
    Raises FileNotFoundError for a missing file, ValueError for an edited or mismatched export."""
    from .exports import read
    path, manifest = read(path)
    if manifest.get("kind") == "model":
        from .network.compile import load_model
        return load_model(path, manifest)
    from .module import load as load_op
    return load_op(path, manifest)


def tune(workloads, target="x86", trials=64, log=None, **kwargs):
    """Tune one workload or many with MetaSchedule; see :func:`convtvm.tuning.engine.tune`."""
    from .tuning.engine import tune as _tune
    return _tune(workloads, target, trials, log, **kwargs)


def compile_model(module, example_inputs, target="x86", tuning_log=None, **kwargs):
    """Compile a torch.nn.Module into one Relax VM executable built from convtvm's kernels."""
    from .network import compile_model as _compile
    return _compile(module, example_inputs, target, tuning_log, **kwargs)


def __getattr__(name):
    """``convtvm.models`` (the reference networks, which import torch) on first use, not at import."""
    if name == "models":
        import importlib
        return importlib.import_module(".models", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Workload", "variants", "workload", "build", "load", "tune", "compile_model", "__version__"]
