"""Stage 1 of a network's compilation: a network as a Relax IRModule.

A network is a torch.nn.Module, a ``torch.export.ExportedProgram``, or an ``OnnxModel``
(``load_model_file`` reads the latter two from a ``.pt2`` or ``.onnx`` file, with their example
inputs). ``import_model`` dispatches; ``import_torch`` exports a module (``torch.export``) in eval
mode, or takes an ExportedProgram as it is, and imports the ATen graph as it is (decomposed only
when an op needs it); ``import_onnx`` runs Relax's ONNX frontend. The weights are bound as
constants so that later passes can fold them. It refuses what an inference executable cannot
reproduce (training-mode layers and ops, dtypes other than float32) and ops TVM's frontends do
not convert, naming the op and the node.
"""

from __future__ import annotations

import contextlib
import logging
import zipfile
from pathlib import Path

import numpy as np


class UnsupportedOp(ValueError):
    """An op of the network that convtvm cannot compile: one TVM's frontend does not convert, a
    training-mode op, or a convolution or pooling op whose attributes convtvm's kernels do not
    cover (a ValueError)."""


MODEL_FILE_SUFFIXES = (".pt2", ".onnx")


class OnnxModel:
    """An ONNX model read from ``path``: ``proto``, its ``onnx.ModelProto``."""

    def __init__(self, proto, path):
        self.proto, self.path = proto, Path(path)

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r})"


def is_model_file(name) -> bool:
    """Whether ``convtvm ... --model NAME`` names a file rather than a built-in model: a ``.pt2`` or
    ``.onnx`` name, a path with a folder in it, or an existing file."""
    text = str(name)
    return text.lower().endswith(MODEL_FILE_SUFFIXES) or "/" in text or "\\" in text or Path(text).is_file()


def load_model_file(path, seed: int = 0) -> tuple:
    """(network, example inputs as a list of torch tensors) from a model file.

    A ``.pt2`` archive (``torch.export.save``) gives its ExportedProgram and the example inputs saved
    with it (``ep.example_inputs``; keyword inputs are refused). An ONNX file gives an ``OnnxModel``
    and seeded random inputs of its graph's input shapes and dtypes (a symbolic dimension, e.g. a
    batch named "N", is 1). The file's content decides, not its suffix. Raises FileNotFoundError for
    a missing file and ValueError for one that is neither, or that cannot be read."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" + (" (a folder)" if path.is_dir() else ""))
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
    if zipfile.is_zipfile(path):
        try:
            with _quiet("torch.export"):  # torch logs the traceback of a failed load as a warning
                ep = torch.export.load(str(path))
        except Exception as e:  # noqa: BLE001 - any failure to load is the file's
            raise ValueError(f"{path}: a zip archive, but not a torch.export .pt2 archive torch.export.load "
                             f"can read ({_first_line(e)})") from None
        if ep.example_inputs is None:
            raise ValueError(f"{path}: saved without example inputs; export with torch.export.export(model, args) "
                             f"and save that ExportedProgram (its inputs give the shapes)")
        args, kwargs = ep.example_inputs
        if kwargs:
            raise ValueError(f"{path}: keyword inputs {', '.join(kwargs)}; convtvm calls a network with positional "
                             f"tensors only")
        return ep, list(args)
    proto = _onnx_proto(path, head)
    return OnnxModel(proto, path), _onnx_inputs(proto, seed)


def _onnx_proto(path: Path, head: bytes):
    """The ONNX ModelProto in ``path``; ValueError when it is not one."""
    neither = f"{path}: neither a torch.export .pt2 archive (torch.export.save) nor an ONNX model"
    if not head:
        raise ValueError(f"{path}: an empty file, {neither.split(': ', 1)[1]}")
    try:
        import onnx
    except ImportError:
        raise ValueError(f"{neither} (or an ONNX model, and the onnx package is not installed: "
                         f"pip install onnx)") from None
    try:
        proto = onnx.load(str(path))
    except Exception:  # noqa: BLE001 - not a protobuf of a model
        raise ValueError(neither) from None
    if not proto.graph.node or not proto.opset_import or proto.ir_version < 3:
        raise ValueError(neither)
    return proto


def _onnx_inputs(proto, seed: int) -> list:
    """Seeded random torch tensors for an ONNX graph's inputs (those not given by initializers)."""
    import onnx
    import torch
    known = {t.name for t in proto.graph.initializer}
    gen = torch.Generator().manual_seed(seed + 1)
    inputs = []
    for v in proto.graph.input:
        if v.name in known:
            continue
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim]
        dtype = torch.from_numpy(np.zeros(0, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))).dtype
        inputs.append(torch.randn(shape, generator=gen).to(dtype) if dtype.is_floating_point
                      else torch.zeros(shape, dtype=dtype))
    return inputs


@contextlib.contextmanager
def _quiet(logger: str):
    log = logging.getLogger(logger)
    disabled, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = disabled


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def import_model(model, example_inputs):
    """A network (torch.nn.Module, ExportedProgram or OnnxModel) -> Relax IRModule with the weights
    bound as constants: ``import_onnx`` for an OnnxModel, ``import_torch`` otherwise."""
    if isinstance(model, OnnxModel):
        return import_onnx(model, example_inputs)
    return import_torch(model, example_inputs)


def reference_outputs(model, example_inputs):
    """The network's own outputs on ``example_inputs`` as a list of numpy arrays: torch's (a module in
    eval mode, an ExportedProgram's module), ONNX Runtime's for an OnnxModel; None where nothing can
    run it (ONNX Runtime not installed)."""
    import torch
    if isinstance(model, OnnxModel):
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        sess = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return list(sess.run(None, {n: x.numpy() for n, x in zip(names, example_inputs)}))
    with in_eval(model), torch.no_grad():
        ref = torch_callable(model)(*example_inputs)
    ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    return [r.numpy() for r in ref]


def torch_callable(model):
    """What runs ``model`` in torch: the module itself, an ExportedProgram's ``module()``; None for
    an OnnxModel."""
    import torch
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    return None if isinstance(model, OnnxModel) else model


def import_onnx(model: OnnxModel, example_inputs):
    """OnnxModel -> Relax IRModule (Relax's ONNX frontend, at ``example_inputs``' shapes and dtypes),
    the weights bound as constants. Raises UnsupportedOp naming the first node whose op the
    frontend does not convert."""
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map
    example_inputs = tuple(example_inputs)
    _check_float32(None, example_inputs)
    graph = model.proto.graph
    known = set(_get_convert_map()) | {"If"}
    for node in graph.node:
        if node.op_type not in known:
            raise UnsupportedOp(f"ONNX operator {node.op_type} (node {node.name or '(unnamed)'!r}) is not supported "
                                f"by TVM's ONNX importer")
    init = {t.name for t in graph.initializer}
    names = [v.name for v in graph.input if v.name not in init]
    shapes = {n: list(x.shape) for n, x in zip(names, example_inputs)}
    dtypes = {n: str(x.dtype).replace("torch.", "") for n, x in zip(names, example_inputs)}
    mod = from_onnx(model.proto, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    return mod.with_attr(NODE_NAMES, _onnx_node_names(mod, graph))


NODE_NAMES = "convtvm.node_names"  # IRModule attribute: Relax var name -> the source graph's node name
_ONNX_KINDS = {"Conv": "conv", "ConvTranspose": "conv_transpose", "MaxPool": "max_pool", "AveragePool": "avg_pool"}


def _call_kind(op_name: str) -> str:
    """relax.nn.conv2d_transpose -> conv_transpose, relax.nn.max_pool3d -> max_pool."""
    name = op_name.rsplit(".", 1)[-1]
    return name.replace("1d", "").replace("2d", "").replace("3d", "")


def _onnx_node_names(mod, graph) -> dict:
    """``_node_names`` for an ONNX graph's Conv, ConvTranspose, MaxPool and AveragePool nodes."""
    return _node_names(mod, [(_ONNX_KINDS[n.op_type], n.name or f"{n.op_type} #{k}")
                             for k, n in enumerate(graph.node) if n.op_type in _ONNX_KINDS])


def _node_names(mod, nodes: list) -> dict:
    """Relax var name -> source node name for the convolution and pooling calls of the imported
    ``mod``, from ``nodes`` ((kind, name) in the graph's order): a frontend converts each such node
    into one Relax call of its kind, in the graph's order, so the k-th call of a kind is the k-th node
    of that kind (a kind whose counts differ is left out)."""
    from tvm import relax
    calls: dict = {}
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call) and hasattr(b.value.op, "name"):
                calls.setdefault(_call_kind(b.value.op.name), []).append(b.var.name)
    by_kind: dict = {}
    for kind, name in nodes:
        by_kind.setdefault(kind, []).append(name)
    return {v: n for kind, ns in by_kind.items() if len(calls.get(kind, [])) == len(ns)
            for v, n in zip(calls[kind], ns)}


def import_torch(module, example_inputs):
    """torch.nn.Module or ExportedProgram -> Relax IRModule with the weights bound as constants.

    The module is exported in eval mode, and every submodule's training flag is restored afterwards
    (the caller's module is left as it was). A submodule whose forward differs in training mode
    (BatchNorm, InstanceNorm with running statistics, Dropout, RReLU) must already be in eval mode:
    convtvm compiles inference, and would otherwise answer what the module answers in eval mode,
    not what it answers now (``UnsupportedOp`` names the submodule). So must a training-mode op that
    the forward asks for itself (``F.batch_norm(..., training=True)``, ``F.dropout(..., training=True)``).
    Only float32 networks are supported (parameters, buffers and floating-point inputs; integer
    inputs, e.g. an embedding's indices, are fine): another dtype is a ValueError.

    An ExportedProgram (e.g. loaded from a ``.pt2`` file) is imported as it was exported (one with
    symbolic dimensions exported again from its module at ``example_inputs``' static shapes); its
    graph's training-mode ops are refused as a module's are. An op that
    TVM's importer converts neither as it is nor decomposed is an UnsupportedOp naming the op and
    its node in the exported graph."""
    import torch
    from tvm import relax
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.torch import from_exported_program

    example_inputs = tuple(example_inputs)
    _check_float32(module, example_inputs)
    if isinstance(module, torch.export.ExportedProgram):
        ep = module
        if ep.range_constraints:  # symbolic dimensions: exported again at the example inputs' shapes
            with torch.no_grad():
                ep = torch.export.export(ep.module(), example_inputs)
    else:
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
        ep = ep.run_decompositions()
        _refuse_unconverted_ops(ep)
        mod = from_exported_program(ep, run_ep_decomposition=False, **kw)
    mod, params = detach_params(mod)
    func = mod["main"]
    n_in = int(func.attrs["num_input"])
    bound = {v: p for v, p in zip(func.params[n_in:], params.get("main", []))}
    mod = relax.transform.BindParams("main", bound)(mod)
    nodes = [(_torch_kind(n), n.name) for n in ep.graph.nodes if n.op == "call_function"]
    return mod.with_attr(NODE_NAMES, _node_names(mod, [(k, name) for k, name in nodes if k]))


def _torch_kind(node) -> str | None:
    """The kind of Relax call (``_call_kind``) TVM's importer makes of an ATen convolution or pooling
    node, None for other nodes."""
    name = node.target.__name__.split(".")[0]
    if name == "convolution":
        return "conv_transpose" if len(node.args) > 6 and node.args[6] else "conv"
    for kind in ("conv_transpose", "conv", "adaptive_avg_pool", "max_pool", "avg_pool", "mean"):
        if name.startswith(kind):
            return kind
    return None


def _refuse_unconverted_ops(ep) -> None:
    """UnsupportedOp naming the first node of ``ep``'s graph whose op TVM's importer has no converter for."""
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter
    known = set(ExportedProgramImporter().create_convert_map())
    for node in ep.graph.nodes:
        if node.op == "call_function" and node.target.__name__ not in known:
            raise UnsupportedOp(f"operator {node.target} (node {node.name!r}) is not supported by TVM's "
                                f"torch importer (neither as exported nor decomposed)")


@contextlib.contextmanager
def in_eval(module):
    """``module`` in eval mode for the block; every submodule's training flag restored after it (the
    caller's module is left as it was). Anything but a torch.nn.Module is left alone."""
    from torch import nn
    if not isinstance(module, nn.Module):
        yield module
        return
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
    named = [*(("parameter", n, t) for n, t in (module.named_parameters() if module is not None else ())),
             *(("buffer", n, t) for n, t in (module.named_buffers() if module is not None else ())),
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
        _refuse_dropped_arguments(node, schema)


# ATen arguments TVM's importer drops without a word (the op would compile as if they were absent)
_DROPPED = {"divisor_override": None}


def _refuse_dropped_arguments(node, schema) -> None:
    """UnsupportedOp naming the node when it sets an argument TVM's importer ignores (``_DROPPED``: e.g.
    avg_pool's divisor_override, which would otherwise divide by the window size, silently wrong)."""
    for i, arg in enumerate(schema.arguments):
        if arg.name in _DROPPED:
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name, _DROPPED[arg.name])
            if value != _DROPPED[arg.name]:
                raise UnsupportedOp(f"{node.target} (node {node.name!r}) sets {arg.name}={value!r}, which convtvm "
                                    "does not support")


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
