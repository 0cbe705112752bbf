"""Property-based tests (Hypothesis) for issue #31: no input crashes convtvm or silently answers wrong.

- every variant, random *valid* parameters (sizes 1-40, kernel, stride, padding as int / per-dim /
  per-side pairs / "same" / "valid", dilation, groups, channel multiplier, output_padding, both
  layouts, bias, batch 1-3), built for x86 (the untuned fallback) and compared with torch;
- the same parameters are accepted by workload() and by torch (output shapes equal), no build;
- random *invalid* parameters (one parameter broken: wrong type, out of range, breaking a rule)
  raise a ValueError that names that parameter, without reaching TVM;
- NaN and +-inf in the data, weights, biases and batch-norm parameters come out where torch puts them.

Profiles (``CONVTVM_FUZZ``): ``ci`` (the default) stays around 80 s on 2 cores: 24 built workloads
(each ~2-3 s to build, checked with finite and then non-finite inputs), 500 accepted and 600 refused
parameter sets (no build, a few seconds); ``long`` runs 500 built workloads and 10x the rest (about
half an hour)::

    .venv/bin/python -m pytest tests/test_fuzz.py                       # ci
    CONVTVM_FUZZ=long .venv/bin/python -m pytest tests/test_fuzz.py     # long

With 24 builds a CI run reaches about half of the 34 variants (a different half each run: the seed
differs); the build-free test reaches all of them every run, and the long profile builds all of them.

Every test runs under ``@seed(SEED)``, SEED being the session's (tests/conftest.py: random unless
``CONVTVM_TEST_SEED`` is set; pytest prints it in its header, and a failure notes it), so a failure
replays with ``CONVTVM_TEST_SEED=<seed>``; Hypothesis also prints a ``@reproduce_failure`` blob. No
example database is written (``database=None``). The long profile does not shrink a failing example
(each shrink step of a built one is a build: the first long run spent 45 minutes shrinking one);
replay its blob under the ci profile to shrink it.

One known deviation is left out of the NaN/inf property: a strided dilation-1 transposed convolution
whose kernel is a multiple of its stride keeps its zero-padded input (the shipped tuning records are
keyed on it), so a non-finite *weight* there gives NaN on the border where torch does not
(test_strict_params.py has it as an xfail).
"""

import json
import math
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, note, seed, settings
from hypothesis import strategies as st

import convtvm
from convtvm.params import ConvSpec
from convtvm.variants import REGISTRY, from_json
from conftest import SEED, rel_err

TOL = 1e-4

PROFILE = os.environ.get("CONVTVM_FUZZ", "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"CONVTVM_FUZZ={PROFILE!r} must be 'ci' or 'long'")
# examples per test, by profile: building a kernel takes 1-3 s, workload() alone microseconds
EXAMPLES = {"ci": dict(build=24, accept=500, invalid=600),
            "long": dict(build=500, accept=5000, invalid=6000)}[PROFILE]
for _name in ("ci", "long"):
    # long: no shrink phase (each shrink step of a built example is a build: one took 45 minutes)
    settings.register_profile(f"convtvm-fuzz-{_name}", deadline=None, derandomize=False, database=None,
                              print_blob=True,
                              phases=[p for p in Phase if _name == "ci" or p is not Phase.shrink],
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much])
BASE = settings.get_profile(f"convtvm-fuzz-{PROFILE}")


# The built test's seed in the ci profile is fixed (CONVTVM_FUZZ_BUILD_SEED, default 1) and not the session's:
# one CI run (2026-12-06, session seed not printed under -q) aborted inside a fallback kernel built for a
# random workload (heap corruption seen at the next tensor access), not reproduced in 16 seeds since. Until
# that is found, CI builds a fixed, known set of workloads; the long profile and CONVTVM_FUZZ_BUILD_SEED=session
# explore with the session seed.
_BUILD_SEED = os.environ.get("CONVTVM_FUZZ_BUILD_SEED", "1" if PROFILE == "ci" else "session")
BUILD_SEED = SEED if _BUILD_SEED == "session" else int(_BUILD_SEED)


def fuzz(kind: str):
    """The profile's settings with ``kind``'s example count, and the seed (the session's, or for the
    built test BUILD_SEED)."""
    def wrap(f):
        return seed(BUILD_SEED if kind == "build" else SEED)(settings(BASE, max_examples=EXAMPLES[kind])(f))
    return wrap


CHANNELS_FIRST = {1: "NCW", 2: "NCHW", 3: "NCDHW"}
CHANNELS_LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}
MAX_SIZE = {1: 40, 2: 40, 3: 10}  # per spatial dim; 3D smaller so that examples stay fast


# ------------------------------------------------------------------------------------------------
# Strategies: valid parameters, by construction
# ------------------------------------------------------------------------------------------------

def _per_dim(draw, values: list):
    """An int (all equal) or a tuple / list of them; sometimes numpy integers."""
    if len(set(values)) == 1 and draw(st.booleans()):
        v = values[0]
        return np.int64(v) if draw(st.integers(0, 9)) == 0 else v
    out = [np.int64(v) if draw(st.integers(0, 9)) == 0 else v for v in values]
    return tuple(out) if draw(st.booleans()) else list(out)


def _layout(draw, ndim):
    return draw(st.sampled_from([None, CHANNELS_FIRST[ndim], CHANNELS_LAST[ndim]]))


@st.composite
def forward_geometry(draw, ndim, same_ok=True):
    """kernel_size, stride, padding, dilation, input_size of a forward convolution."""
    kernel = [draw(st.integers(1, 5)) for _ in range(ndim)]
    dilation = [draw(st.integers(1, 3)) for _ in range(ndim)]
    form = draw(st.sampled_from(["int", "dims", "pairs", "same", "valid"] if same_ok else ["int", "dims", "pairs", "valid"]))
    stride = [1] * ndim if form == "same" else [draw(st.integers(1, 3)) for _ in range(ndim)]
    if form == "int":
        p = draw(st.integers(0, 3))
        pairs, padding = [(p, p)] * ndim, p
    elif form == "dims":
        ps = [draw(st.integers(0, 3)) for _ in range(ndim)]
        pairs, padding = [(p, p) for p in ps], tuple(ps)
    elif form == "pairs":
        pairs = [(draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(ndim)]
        padding = tuple(pairs) if draw(st.booleans()) else [list(p) for p in pairs]
    elif form == "same":
        pairs, padding = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation)], "same"
    else:
        pairs, padding = [(0, 0)] * ndim, "valid"
    size = []
    for a, (k, (pb, pa)) in enumerate(zip(kernel, pairs)):
        if dilation[a] * (k - 1) + 1 - pb - pa > MAX_SIZE[ndim]:  # a dilated kernel past the largest input
            dilation[a] = 1  # ("same" pads with the dilation: it never gets here)
        size.append(draw(st.integers(max(1, dilation[a] * (k - 1) + 1 - pb - pa), MAX_SIZE[ndim])))
    return dict(kernel_size=_per_dim(draw, kernel), stride=_per_dim(draw, stride), padding=padding,
                dilation=_per_dim(draw, dilation), input_size=_per_dim(draw, size))


@st.composite
def transposed_geometry(draw, ndim):
    kernel = [draw(st.integers(1, 5)) for _ in range(ndim)]
    dilation = [draw(st.integers(1, 3)) for _ in range(ndim)]
    stride = [draw(st.integers(1, 3)) for _ in range(ndim)]
    size = [draw(st.integers(1, MAX_SIZE[ndim] // 2)) for _ in range(ndim)]
    out_pad = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    form = draw(st.sampled_from(["int", "dims", "pairs"]))
    budgets = [(i - 1) * s + d * (k - 1) + op for i, s, k, d, op in zip(size, stride, kernel, dilation, out_pad)]
    if form == "int":
        padding = draw(st.integers(0, min(3, min(budgets) // 2)))
    elif form == "dims":
        padding = tuple(draw(st.integers(0, min(3, b // 2))) for b in budgets)
    else:
        pairs = []
        for b in budgets:
            pb = draw(st.integers(0, min(3, b)))
            pairs.append((pb, draw(st.integers(0, min(3, b - pb)))))
        padding = tuple(pairs)
    return dict(kernel_size=_per_dim(draw, kernel), stride=_per_dim(draw, stride), padding=padding,
                dilation=_per_dim(draw, dilation), input_size=_per_dim(draw, size),
                output_padding=_per_dim(draw, out_pad))


@st.composite
def pool_geometry(draw, ndim, dilated):
    kernel = [draw(st.integers(1, 4)) for _ in range(ndim)]
    dilation = [draw(st.integers(1, 3)) if dilated else 1 for _ in range(ndim)]
    pads = [draw(st.integers(0, k // 2)) for k in kernel]  # torch: padding <= kernel_size // 2
    # torch's avg_pool3d: the input at least the kernel, padding not counted
    size = [draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p, k if ndim == 3 and not dilated else 1), MAX_SIZE[ndim]))
            for k, d, p in zip(kernel, dilation, pads)]
    out = dict(kernel_size=_per_dim(draw, kernel), padding=_per_dim(draw, pads), input_size=_per_dim(draw, size),
               stride=draw(st.one_of(st.none(), st.integers(1, 3),
                                     st.tuples(*[st.integers(1, 3)] * ndim))),
               ceil_mode=draw(st.booleans()))
    if dilated:
        out["dilation"] = _per_dim(draw, dilation)
    return out


@st.composite
def valid_workloads(draw, variants=None):
    """(variant, kwargs) that workload() must accept and torch must compute."""
    name = draw(st.sampled_from(variants or sorted(REGISTRY)))
    v = REGISTRY[name]
    nd = v.ndim
    groups = draw(st.integers(1, 4))
    kw = dict(batch=draw(st.integers(1, 3)), in_channels=groups * draw(st.integers(1, 4)),
              out_channels=groups * draw(st.integers(1, 4)), groups=groups, bias=draw(st.booleans()),
              layout=_layout(draw, nd))
    if name.startswith("conv_transpose"):
        kw.update(draw(transposed_geometry(nd)))
    elif name.startswith(("max_pool", "avg_pool")):
        kw = dict(batch=kw["batch"], channels=draw(st.integers(1, 8)), **draw(pool_geometry(nd, "max" in name)))
        if name.startswith("avg"):
            kw["count_include_pad"] = draw(st.booleans())
    elif name == "global_avg_pool2d":
        kw = dict(batch=kw["batch"], channels=draw(st.integers(1, 8)),
                  input_size=(draw(st.integers(1, 40)), draw(st.integers(1, 40))))
    elif name == "channel_shuffle":
        kw = dict(batch=kw["batch"], channels=groups * draw(st.integers(1, 4)), groups=groups, layout=kw["layout"],
                  input_size=(draw(st.integers(1, 12)), draw(st.integers(1, 12))))
    elif name.startswith("pointwise"):
        kw.update(stride=draw(st.integers(1, 3)), input_size=(draw(st.integers(1, 40)), draw(st.integers(1, 40))))
    else:
        kw.update(draw(forward_geometry(nd)))
    if name.startswith("depthwise_conv"):
        kw["channel_multiplier"] = draw(st.integers(1, 3))
    if name == "conv2d_bn_silu":
        kw["bn_eps"] = draw(st.floats(1e-6, 0.1))
    common = ("batch", "input_size", "dtype")
    return name, {k: x for k, x in kw.items() if k in v.defaults or k in common}


def _make(name, kw):
    kw = dict(kw)
    return convtvm.workload(name, **kw)


# ------------------------------------------------------------------------------------------------
# Valid parameters: accepted, computed as torch does (finite and non-finite inputs)
# ------------------------------------------------------------------------------------------------

@fuzz("accept")
@given(case=valid_workloads(), data_seed=st.integers(0, 2**32 - 1))
def test_valid_parameters_are_accepted_and_torch_agrees_on_the_shape(case, data_seed):
    """No build: what the strategy draws as valid, workload() accepts (a ValueError here is a rule
    stricter than torch's) and torch computes (an error from torch is a rule laxer than torch's)."""
    note(f"CONVTVM_TEST_SEED={SEED}")
    name, kw = case
    w = _make(name, kw)
    assert from_json(json.loads(json.dumps(w.to_json()))).key == w.key
    xs = w.random_inputs(seed=data_seed)
    assert w.reference(*xs).shape == w.output_shape
    assert [x.shape for x in xs] == w.input_shapes


def _deviating_weights(w) -> set[int]:
    """Input positions of the weights te_ops multiplies by padding zeros (the documented deviation)."""
    convs = [s for s in w.stages if isinstance(s, ConvSpec)]
    return {i for i, s in zip(w.weight_indices, convs)
            if s.transposed and max(s.stride) > 1 and max(s.dilation) == 1
            and not any(k % st_ for k, st_ in zip(s.kernel, s.stride))}


def _masks_match(y, ref):
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    assert y.shape == ref.shape
    for what, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        bad = test(y) != test(ref)
        assert not bad.any(), f"{what} differs at {np.argwhere(bad)[:5].tolist()} ({int(bad.sum())} elements)"
    finite = np.isfinite(ref)
    if finite.any():
        assert rel_err(y[finite], ref[finite]) <= TOL


@fuzz("build")
@given(case=valid_workloads(), data_seed=st.integers(0, 2**32 - 1), data=st.data())
def test_built_kernels_match_torch_with_finite_and_nonfinite_inputs(case, data_seed, data):
    """Built for x86 (untuned fallback): torch's result within 1e-4 (relative to its largest
    magnitude) on random inputs; then with NaN / +inf / -inf put into some inputs (data, weights,
    biases, batch-norm parameters), NaN and inf exactly where torch has them."""
    note(f"CONVTVM_TEST_SEED={SEED}")
    name, kw = case
    w = _make(name, kw)
    m = convtvm.build(w, target="x86", tuning_log=False)
    assert m.schedule == "fallback"
    xs = w.random_inputs(seed=data_seed)
    y = m(*xs)
    assert y.shape == tuple(w.output_shape)
    assert rel_err(y, w.reference(*xs)) <= TOL

    poisonable = [i for i in range(len(xs)) if i not in _deviating_weights(w)]
    chosen = data.draw(st.lists(st.sampled_from(poisonable), min_size=1, unique=True), label="poisoned inputs")
    values = data.draw(st.sampled_from([[np.nan], [np.inf], [-np.inf], [np.nan, np.inf, -np.inf], [np.inf, -np.inf]]),
                       label="values")
    rng = np.random.default_rng(data_seed)
    for i in chosen:
        x = xs[i]
        k = data.draw(st.integers(1, max(1, x.size // 8)), label=f"{w.input_names[i]}: poisoned elements")
        x.flat[rng.choice(x.size, k, replace=False)] = rng.choice(values, k)
    _masks_match(m(*xs), w.reference(*xs))


# ------------------------------------------------------------------------------------------------
# Invalid parameters: a ValueError naming the parameter, before TVM
# ------------------------------------------------------------------------------------------------

_INT = ["0", "-1", "2.0", "'4'", "None", "True", "2**31", "[2]"]


@st.composite
def invalid_workloads(draw):
    """(variant, kwargs, the parameter the error must name): a valid workload with one parameter
    broken (its type, its range, or a rule it must keep with the others)."""
    name, kw = draw(valid_workloads())
    nd = REGISTRY[name].ndim
    present = [k for k in kw] + ["dtype"]
    choices = []
    for k in present:
        if k in ("in_channels", "out_channels", "channels", "groups", "channel_multiplier", "batch"):
            choices += [(k, v) for v in _INT]
        elif k in ("kernel_size", "stride", "dilation", "input_size"):
            choices += [(k, v) for v in ["0", "-1", "3.0", "'3'", "True", "2**31", "(1,) * (nd + 1)", "[1.5] * nd"]]
            if k != "input_size" and not (k == "stride" and name.startswith(("max_pool", "avg_pool"))):
                choices.append((k, "None"))  # None is the documented default of these two
        elif k == "output_padding":
            choices += [(k, v) for v in ["-1", "1.0", "None", "'1'", "(0,) * (nd + 1)"]]
        elif k == "padding":
            bad = ["-1", "1.0", "None", "(1,) * (nd + 1)", "2**31"]
            if name.startswith(("max_pool", "avg_pool")):
                bad += ["'same'", "((1, 1),) * nd"]
            else:
                bad += ["'full'", "((1, 2, 3),) * nd", "(('1', 2),) * nd"]
            choices += [(k, v) for v in bad]
        elif k in ("bias", "ceil_mode", "count_include_pad"):
            choices += [(k, v) for v in ["'False'", "'no'", "'True'", "0", "1", "None", "[True]"]]
        elif k == "layout":
            choices += [(k, v) for v in ["''", "0", "'NCWH'", "CHANNELS_LAST[nd % 3 + 1]", "['NCHW']"]]
        elif k == "dtype":
            choices += [(k, v) for v in ["'float'", "'int8'", "None", "np.dtype('float32')", "'float32 '"]]
        elif k == "bn_eps":
            choices += [(k, v) for v in ["-1.0", "0", "0.0", "math.nan", "math.inf", "'1e-3'", "None", "True"]]
    # rules between parameters
    if "groups" in kw and "in_channels" in kw:
        choices.append(("groups", "kw['in_channels'] + 1"))
    if "output_padding" in kw:
        choices.append(("output_padding", "max(_dims(kw['stride'], nd)[0], _dims(kw['dilation'], nd)[0])"))
    if "kernel_size" in kw and not name.startswith("conv_transpose") and kw.get("padding") != "same":
        choices.append(("kernel_size", "tuple(i + 2 * 3 + 1 for i in _dims(kw['input_size'], nd))"))
    if name.startswith(("max_pool", "avg_pool")):
        choices.append(("padding", "tuple(k // 2 + 1 for k in _dims(kw['kernel_size'], nd))"))
    if "padding" in kw and not name.startswith(("max_pool", "avg_pool")):
        choices.append(("padding", "'same' if max(_dims(kw['stride'], nd)) > 1 or name.startswith('conv_t') else 'full'"))
    choices.append(("input_size", "(2**31 - 1,) * nd"))  # with batch 2 below: past int32 indexing
    choices.append(("unknown", None))
    param, expr = draw(st.sampled_from(choices))
    kw = dict(kw)
    if param == "unknown":
        kw["kernel"] = 3
        return name, kw, "kernel"
    kw[param] = eval(expr, {"np": np, "math": math, "CHANNELS_LAST": CHANNELS_LAST, "_dims": _dims},
                     {"nd": nd, "kw": kw, "name": name})
    if expr == "(2**31 - 1,) * nd":
        kw["batch"] = 2
    return name, kw, param


def _dims(value, nd):
    value = value if not isinstance(value, np.ndarray) else value.tolist()
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * nd


def _no_tvm(*args, **kwargs):
    raise AssertionError("workload() reached TVM")


@fuzz("invalid")
@given(case=invalid_workloads())
def test_invalid_parameters_name_the_parameter_and_never_reach_tvm(case):
    import tvm
    note(f"CONVTVM_TEST_SEED={SEED}")
    name, kw, param = case
    kw = dict(kw)
    with mock.patch.object(tvm.te, "create_prim_func", _no_tvm), mock.patch.object(convtvm, "build", _no_tvm):
        with pytest.raises(ValueError) as e:
            convtvm.workload(name, **kw)
    message = str(e.value)
    assert (f"{param}=" if param != "kernel" else "takes no parameter kernel") in message, message
