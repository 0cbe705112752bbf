"""Stage 1 of a network's compilation: a torch.nn.Module as a Relax IRModule.

``import_torch`` exports the module (``torch.export``) in eval mode and imports the ATen graph as it
is (decomposed only when an op needs it), with the weights bound as constants so that later passes
can fold them. It refuses what an inference executable cannot reproduce: training-mode layers and
ops, and dtypes other than float32.
"""

from __future__ import annotations

import contextlib

import numpy as np


class UnsupportedOp(ValueError):
    """A convolution or pooling op whose attributes convtvm's kernels do not cover (a ValueError)."""


def import_torch(module, example_inputs):
    """torch.nn.Module -> Relax IRModule with the weights bound as constants.

    The module is exported in eval mode, and every submodule's training flag is restored afterwards
    (the caller's module is left as it was). A submodule whose forward differs in training mode
    (BatchNorm, InstanceNorm with running statistics, Dropout, RReLU) must already be in eval mode:
    convtvm compiles inference, and would otherwise answer what the module answers in eval mode,
    not what it answers now (``UnsupportedOp`` names the submodule). So must a training-mode op that
    the forward asks for itself (``F.batch_norm(..., training=True)``, ``F.dropout(..., training=True)``).
    Only float32 networks are supported (parameters, buffers and floating-point inputs; integer
    inputs, e.g. an embedding's indices, are fine): another dtype is a ValueError."""
    import torch
    from tvm import relax
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.torch import from_exported_program

    example_inputs = tuple(example_inputs)
    _check_float32(module, example_inputs)
    _refuse_training_layers(module)
    with in_eval(module), torch.no_grad():
        ep = torch.export.export(module, example_inputs)
    _refuse_training_ops(ep)
    kw = dict(keep_params_as_input=True, unwrap_unit_return_tuple=True)
    try:  # the exported ATen ops as they are: fast (EfficientNetV2-S: 0.5 s instead of ~12 s)
        mod = from_exported_program(ep, run_ep_decomposition=False, **kw,
                                    custom_convert_map={"batch_norm.default": _aten_batch_norm})
    except UnsupportedOp:  # the decomposed import would not refuse it: it ignores what was refused
        raise
    except Exception:  # noqa: BLE001 - an op only its decomposition covers: decompose (slower)
        mod = from_exported_program(ep, **kw)
    mod, params = detach_params(mod)
    func = mod["main"]
    n_in = int(func.attrs["num_input"])
    bound = {v: p for v, p in zip(func.params[n_in:], params.get("main", []))}
    return relax.transform.BindParams("main", bound)(mod)


@contextlib.contextmanager
def in_eval(module):
    """``module`` in eval mode for the block; every submodule's training flag restored after it (the
    caller's module is left as it was)."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        yield module.eval()
    finally:
        for m, training in flags:
            m.training = training


SUPPORTED_DTYPE = "float32"


def _check_float32(module, example_inputs) -> None:
    """ValueError naming the first parameter, buffer or floating-point input that is not float32
    (TVM 0.27's importer computes convolutions in float32 whatever the weights' dtype)."""
    import torch
    named = [*(("parameter", n, t) for n, t in module.named_parameters()),
             *(("buffer", n, t) for n, t in module.named_buffers()),
             *(("input", str(k), x) for k, x in enumerate(example_inputs))]
    for what, name, t in named:
        if not isinstance(t, torch.Tensor):
            if what == "input":
                raise ValueError(f"example input {name} is a {type(t).__name__}; give torch tensors")
            continue
        if (t.is_floating_point() or t.is_complex()) and t.dtype != torch.float32:
            dtype = str(t.dtype).replace("torch.", "")
            raise ValueError(f"{what} {name!r} is {dtype}: compile_model supports {SUPPORTED_DTYPE} networks only "
                             f"(floating-point parameters, buffers and inputs in {SUPPORTED_DTYPE}; integer inputs "
                             f"such as indices are fine): convert with module.float() and x.float()")


def _refuse_training_layers(module) -> None:
    """UnsupportedOp naming the first submodule in training mode whose forward there is not its
    inference forward."""
    from torch import nn
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.RReLU)
    for name, m in module.named_modules():
        if not m.training:
            continue
        norm_stats = isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats
        if isinstance(m, kinds) or norm_stats:
            raise UnsupportedOp(f"submodule {name or '(the module itself)'!r} ({type(m).__name__}) is in training "
                                f"mode, where its output is not its inference output; convtvm compiles inference: "
                                f"call the module's eval() first")


def _refuse_training_ops(ep) -> None:
    """UnsupportedOp naming the first node of the exported graph that asks for training behaviour
    itself (an ATen op with training=True / train=True: a batch norm with the batch's statistics, a
    dropout): TVM's importer would drop that argument and compile the inference op instead."""
    for node in ep.graph.nodes:
        schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
        if schema is None:
            continue
        always = schema.name.split("::")[-1].startswith("_batch_norm_with_update")
        for i, arg in enumerate(schema.arguments):
            if arg.name not in ("training", "train"):
                continue
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name, False)
            if value is True or always:
                raise UnsupportedOp(f"{node.target} (node {node.name!r}) runs in training mode ({arg.name}=True); "
                                    f"convtvm compiles inference only: pass {arg.name}=False (and call eval())")


def _aten_batch_norm(node, importer):
    """aten.batch_norm(x, weight, bias, mean, var, training, momentum, eps, cudnn) in inference
    (TVM 0.27's converter reads its arguments as the decomposed op's: eps=momentum, training)."""
    from tvm import relax
    x = importer.env[node.args[0]]
    training, momentum, eps = node.args[5:8]
    if training:
        raise UnsupportedOp(f"{node.target} (node {node.name!r}) runs in training mode (training=True); "
                            f"convtvm compiles inference only: pass training=False (and call eval())")
    channels, dtype = int(importer.shape_of(x)[1]), x.ty.dtype.dtype

    def arg(i, fill):
        return importer.env[node.args[i]] if node.args[i] is not None else relax.const(np.full(channels, fill), dtype)

    bn = relax.op.nn.batch_norm(x, arg(1, 1.0), arg(2, 0.0), arg(3, 0.0), arg(4, 1.0), axis=1, epsilon=eps,
                                momentum=momentum, training=False)
    return importer.block_builder.emit(importer.block_builder.emit(bn)[0])
