"""compile_model and its Model on input that used to crash it or answer wrongly (issue #31): a
training-mode batch norm, a module left switched to eval(), out-of-range embedding indices, float64,
a misspelled keyword, a module called in a forked child, ``convtvm.models`` after ``import convtvm``."""

import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convtvm
from convtvm import network
from convtvm.network import importer

X = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))


class FunctionalBatchNorm(nn.Module):
    """F.batch_norm asked for training mode by the forward itself (module.eval() does not change it)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.linspace(-1, 1, 4))
        self.register_buffer("var", torch.linspace(0.5, 2, 4))

    def forward(self, x):
        return F.batch_norm(x, self.mean, self.var, training=True)


def test_batch_norm_in_training_mode_is_refused_naming_the_op_and_node():
    """It compiled with the running statistics (max diff 1.6 against torch): the converter's
    UnsupportedOp was swallowed by the fallback to the decomposed import."""
    with pytest.raises(network.UnsupportedOp, match=r"aten\.batch_norm\.default \(node 'batch_norm'\) runs in "
                                                  r"training mode \(training=True\)"):
        network.compile_model(FunctionalBatchNorm(), [X])


def test_the_converter_refuses_training_batch_norm_itself_and_nothing_swallows_it(monkeypatch):
    """Without the exported graph's scan, the converter's own UnsupportedOp reaches the caller."""
    monkeypatch.setattr(importer, "_refuse_training_ops", lambda ep: None)
    with pytest.raises(network.UnsupportedOp, match=r"node 'batch_norm'.*training=True"):
        network.import_torch(FunctionalBatchNorm(), [X])


def test_dropout_in_training_mode_is_refused():
    class Drop(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5, training=True)

    with pytest.raises(network.UnsupportedOp, match=r"aten\.dropout\.default \(node 'dropout'\).*train=True"):
        network.compile_model(Drop(), [X])


def _flags(module) -> list:
    return [(name, m.training) for name, m in module.named_modules()]


def test_training_flags_are_restored_after_compiling():
    """compile_model(model.train()) left every submodule in eval mode."""
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(8, 8, 1), nn.SiLU())).train()
    model[2][0].eval()  # a mix: each submodule's own flag comes back, not the parent's
    before = _flags(model)
    assert any(t for _, t in before) and not all(t for _, t in before)
    net = network.compile_model(model, [X])
    assert _flags(model) == before
    with torch.no_grad():
        ref = model(X)
    assert np.abs(net(X).numpy() - ref.numpy()).max() <= 1e-4 * np.abs(ref.numpy()).max()


@pytest.mark.parametrize("layer", [nn.BatchNorm2d(8), nn.Dropout(0.2), nn.InstanceNorm2d(8, track_running_stats=True)],
                         ids=lambda m: type(m).__name__)
def test_a_layer_in_training_mode_whose_output_differs_is_refused(layer):
    """Compiled, it answered what eval() answers, not what the module in training mode answers."""
    model = nn.Sequential(nn.Conv2d(4, 8, 3), layer).train()
    before = _flags(model)
    with pytest.raises(network.UnsupportedOp, match=rf"submodule '1' \({type(layer).__name__}\) is in training mode.*"
                                                  r"eval\(\)"):
        network.compile_model(model, [X])
    assert _flags(model) == before
    model.eval()
    network.compile_model(model, [X])  # in eval mode it compiles
    assert not any(t for _, t in _flags(model))


# ----------------------------------------------------------------------------------------------
# indices
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedding():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4)
    return emb, network.compile_model(emb, [torch.tensor([1, 2, 3])])


@pytest.mark.parametrize("bad", [12, 10, -1, 2**32 + 1])
def test_an_out_of_range_embedding_index_is_an_index_error(embedding, bad):
    """Index 12 returned garbage, a far one crashed the process; 2**32 + 1 was cast to int32 (row 1)."""
    _, net = embedding
    with pytest.raises(IndexError, match=rf"input 0 \('input'\) holds index {bad}, outside the 10 entries.*"
                                         r"\[0, 9\]"):
        net(torch.tensor([1, bad, 3]))
    with pytest.raises(IndexError, match=f"holds index {bad}"):
        net(np.array([bad, 0, 0]))


def test_in_range_indices_match_torch_and_the_check_survives_export(embedding, tmp_path):
    emb, net = embedding
    idx = torch.tensor([0, 9, 4])
    with torch.no_grad():
        np.testing.assert_array_equal(net(idx).numpy(), emb(idx).numpy())
    assert net.index_bounds == [{"input": 0, "name": "input", "size": 10, "op": "take"}]
    loaded = convtvm.load(net.export(tmp_path / "emb.so"))
    np.testing.assert_array_equal(loaded(idx.numpy()), net(idx.numpy()))
    with pytest.raises(IndexError, match="holds index 10"):
        loaded(np.array([10, 0, 0]))


def test_every_input_that_indexes_a_table_is_checked():
    """index_select, x[idx] and an embedding on a reshaped input: each input against its own table."""
    class Lookups(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.table = nn.Parameter(torch.randn(7, 3))

        def forward(self, i, j, k):
            return (self.emb(i.view(3, 1)).sum() + torch.index_select(self.table, 0, j).sum()
                    + self.table[k].sum())

    model = Lookups()
    xs = [torch.tensor([1, 2, 9]), torch.tensor([0, 6]), torch.tensor([0, 1, 2])]
    net = network.compile_model(model, xs)
    assert [(b["input"], b["size"]) for b in net.index_bounds] == [(0, 10), (1, 7), (2, 7)]
    with torch.no_grad():
        assert abs(float(net(*xs)) - float(model(*xs))) <= 1e-4 * abs(float(model(*xs)))
    with pytest.raises(IndexError, match=r"input 1 \('j'\) holds index 7"):
        net(xs[0], torch.tensor([0, 7]), xs[2])


def test_an_index_the_network_computes_never_reads_outside_the_table():
    """An index no input check can see (computed in the network) is clipped into the table: a wrong
    row for an index torch refuses, but never a read outside it (it used to crash the process).
    Run in a child process so that a crash fails this test, not the session."""
    script = textwrap.dedent("""
        import torch, convtvm
        from torch import nn
        class Far(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(10, 4)
            def forward(self, i):
                return self.emb(i * 100000000)
        model = Far()
        net = convtvm.compile_model(model, [torch.tensor([0, 0, 0])])
        assert net.index_bounds == []
        y = net(torch.tensor([0, 3, 1]))
        assert torch.equal(y[0], model.emb.weight[0].detach())
        assert torch.equal(y[1], model.emb.weight[9].detach())  # clipped
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


# ----------------------------------------------------------------------------------------------
# dtypes and keywords
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_a_network_in_another_float_dtype_is_refused_clearly(dtype):
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU()).to(dtype)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(ValueError, match=rf"parameter '0.weight' is {name}: compile_model supports float32"):
        network.compile_model(model, [X.to(dtype)])
    with pytest.raises(ValueError, match=rf"input '0' is {name}"):
        network.compile_model(nn.ReLU(), [X.to(dtype)])


def test_a_misspelled_keyword_names_itself_and_the_accepted_ones():
    with pytest.raises(ValueError, match=r"compile_model\(\) got an unknown keyword argument 'tuning_logg'; "
                                         r"it accepts .*tuning_log, arm_cpu, cuda_arch, num_cores"):
        convtvm.compile_model(nn.ReLU(), [X], tuning_logg=None)
    w = convtvm.workload("conv2d", in_channels=4, out_channels=4, input_size=(6, 6))
    with pytest.raises(ValueError, match=r"convtvm\.build\(\) got an unknown keyword argument 'arm_cpus'"):
        convtvm.build(w, "arm", arm_cpus="cortex-a72")


# ----------------------------------------------------------------------------------------------
# fork
# ----------------------------------------------------------------------------------------------

def _call_in_child(fn, timeout: float = 60.0) -> int:
    """Run ``fn`` in a forked child; its exit code (the child is killed and -9 returned if it hangs)."""
    child = multiprocessing.get_context("fork").Process(target=fn)
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        return -9
    return child.exitcode


def test_a_module_and_a_model_run_in_a_forked_child_after_the_parent_ran_them():
    """TVM's worker threads do not survive a fork: a kernel called in the child of a parent that had
    called one waited for them for ever (only TVM_NUM_THREADS=1 worked). The kernels are large enough
    (4.7M multiply-adds) for the fallback schedule to run them on TVM's thread pool."""
    w = convtvm.workload("conv2d", in_channels=16, out_channels=32, input_size=(32, 32), kernel_size=3, padding=1)
    m = convtvm.build(w)
    xs = w.random_inputs(seed=0)
    ref = m(*xs)
    x = torch.randn(1, 16, 32, 32, generator=torch.Generator().manual_seed(1))
    net = network.compile_model(nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()).eval(), [x])
    net_ref = net(x)
    parent_threads = os.environ["TVM_NUM_THREADS"]

    def child():
        ok = np.array_equal(m(*xs), ref) and torch.equal(net(x), net_ref)
        os._exit(0 if ok and os.environ["TVM_NUM_THREADS"] == "1" else 3)

    assert _call_in_child(child) == 0, "the child hung (-9) or computed something else (3)"
    assert os.environ["TVM_NUM_THREADS"] == parent_threads  # the parent keeps its threads
    assert np.array_equal(m(*xs), ref)


# ----------------------------------------------------------------------------------------------
# convtvm.models
# ----------------------------------------------------------------------------------------------

def test_models_are_reachable_from_the_package_and_load_lazily():
    """``import convtvm; convtvm.models.efficientnet_v2_s()`` (as the README writes it) raised
    AttributeError; importing convtvm must still not import torch."""
    script = textwrap.dedent("""
        import sys
        import convtvm
        assert "torch" not in sys.modules and "convtvm.models" not in sys.modules
        assert callable(convtvm.models.efficientnet_v2_s)
        try:
            convtvm.no_such_thing
        except AttributeError as e:
            assert "no_such_thing" in str(e)
        else:
            raise AssertionError("no AttributeError")
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


NAN_NETS = {
    "relu": lambda: nn.ReLU(),
    "conv_relu": lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
    "conv_bn_relu": lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
    "conv_relu6": lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU6()),
    "hardtanh": lambda: nn.Hardtanh(-0.5, 0.5),
    "hardsigmoid": lambda: nn.Hardsigmoid(),
}


@pytest.mark.parametrize("name", sorted(NAN_NETS))
def test_nan_and_inf_in_a_network_propagate_as_in_torch(name, seed):
    """TVM's ReLU and clip (max/min) dropped a NaN: conv + ReLU gave no NaN output where torch gives 36."""
    torch.manual_seed(seed)
    net = NAN_NETS[name]().eval()
    x = torch.randn(1, 3, 6, 6)
    x[0, 0, 2, 2], x[0, 1, 0, 0], x[0, 2, 5, 5] = float("nan"), float("inf"), -float("inf")
    with torch.no_grad():
        ref = net(x)
    got = convtvm.compile_model(net, [x])(x)
    assert torch.isnan(ref).any() and torch.equal(torch.isnan(got), torch.isnan(ref))
    finite = ~torch.isnan(ref)
    assert torch.equal(torch.isinf(got[finite]), torch.isinf(ref[finite]))
    assert torch.allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [[1.0, 2.0], None, "x"])
def test_a_network_called_with_no_array_names_the_input(bad):
    x = torch.randn(1, 3, 6, 6)
    net = convtvm.compile_model(nn.ReLU().eval(), [x])
    with pytest.raises(TypeError, match=r"input 0 is a \w+: give a torch tensor or a numpy array of shape \(1, 3, 6, 6\)"):
        net(bad)


def test_an_avg_pool_divisor_override_is_refused_not_dropped():
    """TVM's importer dropped divisor_override: AvgPool2d(3, 2, divisor_override=3) compiled and differed
    from torch by up to 2.1."""
    x = torch.randn(1, 2, 9, 9)
    with pytest.raises(network.UnsupportedOp, match=r"node 'avg_pool2d'\) sets divisor_override=3"):
        convtvm.compile_model(nn.AvgPool2d(3, stride=2, divisor_override=3).eval(), [x])
    net = convtvm.compile_model(nn.AvgPool2d(3, stride=2).eval(), [x])  # without it: compiled, torch's answer
    assert torch.allclose(net(x), nn.AvgPool2d(3, stride=2)(x), rtol=1e-4, atol=1e-6)
