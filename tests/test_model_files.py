"""``convtvm tune/build --model FILE``: a network saved in the test (a ``.pt2`` ExportedProgram from
``torch.export.save``, an ONNX model) built through the command line and compared with torch on fresh
inputs; tuned with a few trials; an unsupported operator, a file that is no model and ``--input-size``
with a file refused in one line, exit 2."""

import zipfile

import pytest
import torch
from torch import nn

import convtvm
from convtvm.cli import main
from convtvm.records.log import TuningLog
from convtvm.tuning.network import model_trials_key
from conftest import rel_err

SHAPE = (2, 3, 12, 12)  # not the named models' 224: the saved example inputs decide


class SmallNet(nn.Module):
    """A few convolutions with BatchNorm and ReLU, max and global pooling, a linear head."""

    def __init__(self, head=None):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, groups=2), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 1), nn.ReLU())
        self.pool = head or nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _model(head=None) -> nn.Module:
    torch.manual_seed(0)
    model = SmallNet(head)
    for m in model.modules():  # non-trivial running statistics, so the BN fold is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _save_pt2(model, path):
    ep = torch.export.export(model, (torch.randn(SHAPE),))
    torch.export.save(ep, str(path))
    return path


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    return _save_pt2(_model(), tmp_path_factory.mktemp("pt2") / "small.pt2")


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_pt2_file_builds_through_the_cli_and_matches_torch(pt2, tmp_path, seed):
    out = tmp_path / "net.so"
    assert main(["build", "--model", str(pt2), "-o", str(out)]) == 0
    net = convtvm.load(out)
    assert net.inputs == [{"shape": list(SHAPE), "dtype": "float32"}]  # the saved example inputs' shape
    model = _model()
    for k in range(2):
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed + k))
        with torch.no_grad():
            ref = model(x)
        assert rel_err(net(x), ref) <= 1e-4


def test_a_pt2_file_with_a_symbolic_batch_builds_at_its_example_inputs_shape(tmp_path, seed):
    model = _model()
    ep = torch.export.export(model, (torch.randn(SHAPE),),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=8)},))
    torch.export.save(ep, str(tmp_path / "dyn.pt2"))
    assert main(["build", "--model", str(tmp_path / "dyn.pt2"), "-o", str(tmp_path / "dyn.so")]) == 0
    net = convtvm.load(tmp_path / "dyn.so")
    assert net.inputs[0]["shape"] == list(SHAPE)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert rel_err(net(x), model(x)) <= 1e-4


def test_a_pt2_file_tunes_into_a_log(pt2, tmp_path, capsys):
    log = tmp_path / "log"
    assert main(["tune", "--model", str(pt2), "--trials", "4", "--trials-per-iter", "4", "--log", str(log)]) == 0
    out = capsys.readouterr().out
    assert f"{pt2} ({'x'.join(map(str, SHAPE))})" in out and "unique conv/pool tasks" in out
    assert TuningLog(log).has_records()
    assert model_trials_key(str(pt2), None) == "model:small.pt2"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript-based exporter: no onnxscript here
def test_an_onnx_file_builds_with_convtvm_kernels_and_matches_torch(tmp_path, seed):
    pytest.importorskip("onnx")
    model, path = _model(), tmp_path / "small.onnx"
    torch.onnx.export(model, (torch.randn(SHAPE),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    out = tmp_path / "onnx.so"
    assert main(["build", "--model", str(path), "-o", str(out)]) == 0
    net = convtvm.load(out)
    assert net.inputs == [{"shape": [1, *SHAPE[1:]], "dtype": "float32"}]  # the symbolic batch is 1
    assert sum(net.lowered_ops.values()) >= 4  # convolutions and pooling are convtvm's
    x = torch.randn(1, *SHAPE[1:], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x)
    assert rel_err(net(x), ref) <= 1e-4


def test_an_unsupported_torch_operator_is_one_line_naming_it_and_its_node(tmp_path, capsys):
    path = _save_pt2(_model(head=nn.AdaptiveMaxPool2d(1)), tmp_path / "maxhead.pt2")
    assert main(["build", "--model", str(path), "-o", str(tmp_path / "x.so")]) == 2
    err = _error(capsys)
    assert err.startswith("convtvm build: error: operator aten.adaptive_max_pool2d.default "
                          "(node 'adaptive_max_pool2d') is not supported"), err


def test_an_unsupported_onnx_operator_is_one_line_naming_it_and_its_node(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
         helper.make_node("Frobnicate", ["r"], ["y"], name="frob1", domain="example.custom")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("example.custom", 1)]), str(path))
    assert main(["build", "--model", str(path), "-o", str(tmp_path / "x.so")]) == 2
    assert "ONNX operator Frobnicate (node 'frob1') is not supported" in _error(capsys)


def test_a_file_that_is_no_model_is_refused_in_one_line(tmp_path, capsys):
    text, empty, archive = tmp_path / "notes.txt", tmp_path / "empty.pt2", tmp_path / "other.pt2"
    text.write_text("not a network\n")
    empty.write_bytes(b"")
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("hello.txt", "a zip, but no ExportedProgram")
    expected = {text: "neither a torch.export .pt2 archive", empty: "an empty file",
                archive: "not a torch.export .pt2 archive", tmp_path / "missing.pt2": "no such file"}
    for path, words in expected.items():
        assert main(["build", "--model", str(path), "-o", str(tmp_path / "x.so")]) == 2
        err = _error(capsys)
        assert err.startswith(f"convtvm build: error: {path}: ") and words in err, err


def test_input_size_with_a_file_is_refused(pt2, tmp_path, capsys):
    for cmd in (["build", "-o", str(tmp_path / "x.so")], ["tune", "--log", str(tmp_path / "log")], ["bench"]):
        assert main([*cmd, "--model", str(pt2), "--input-size", "32"]) == 2
        assert "--input-size applies to named models" in _error(capsys)
    assert not (tmp_path / "log").exists()


def test_model_with_a_variant_or_suite_is_refused(pt2, tmp_path, capsys):
    assert main(["build", "conv2d", "--model", str(pt2), "-o", str(tmp_path / "x.so")]) == 2
    assert "give it without a variant" in _error(capsys)


def test_a_pooling_convtvm_refuses_in_an_onnx_file_names_its_node(tmp_path, capsys):
    """ONNX's SAME_UPPER pads one side more than the other; convtvm pools with torch's symmetric padding."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
         helper.make_node("AveragePool", ["r"], ["y"], name="pool_same", kernel_shape=[2, 2], auto_pad="SAME_UPPER")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 6, 6])])
    path = tmp_path / "same.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert main(["build", "--model", str(path), "-o", str(tmp_path / "x.so")]) == 2
    err = _error(capsys)
    assert "convtvm cannot lower relax.nn.avg_pool2d (node 'pool_same')" in err and "asymmetric padding" in err


def test_a_convolution_convtvm_refuses_in_a_pt2_file_names_its_node(pt2, tmp_path, capsys, monkeypatch):
    """As if convtvm's kernels did not cover the second convolution's attributes."""
    from convtvm.network import legalize
    real = legalize.conv_workload

    def refuse_grouped(call):
        if int(call.attrs.groups) > 1:
            raise ValueError("groups=2 is not covered (as if)")
        return real(call)
    monkeypatch.setattr(legalize, "conv_workload", refuse_grouped)
    assert main(["build", "--model", str(pt2), "-o", str(tmp_path / "x.so")]) == 2
    err = _error(capsys)
    assert "convtvm cannot lower relax.nn.conv2d (node 'conv2d_1')" in err and "groups=2 is not covered" in err, err
