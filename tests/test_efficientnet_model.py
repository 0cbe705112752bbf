"""EfficientNetV2 models reproduce torchvision's architecture and state_dict keys."""
from pathlib import Path

import pytest
import torch

# Import the submodule directly: it needs only torch (``import convtvm`` may pull in TVM).
from convtvm.models import efficientnet as effnet

KEYS_FILE = Path(__file__).parent / "data" / "efficientnet_v2_s_state_dict_keys.txt"


def _reference_shapes():
    shapes = {}
    for line in KEYS_FILE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape = line.split()
        shapes[name] = () if shape == "()" else tuple(int(d) for d in shape.split(","))
    return shapes


@pytest.fixture(scope="module")
def v2_s():
    return effnet.seeded_model("efficientnet_v2_s", seed=0, input_size=64)


def test_state_dict_keys_and_shapes_match_torchvision(v2_s):
    ref = _reference_shapes()
    assert len(ref) == 782
    got = {k: tuple(v.shape) for k, v in v2_s.state_dict().items()}
    assert list(got) == list(ref)  # same keys, same order
    assert got == ref


def test_load_state_dict_strict_from_reference_list():
    gen = torch.Generator().manual_seed(1)
    sd = {
        k: torch.tensor(7, dtype=torch.int64) if k.endswith("num_batches_tracked")
        else torch.rand(shape, generator=gen) + 0.5
        for k, shape in _reference_shapes().items()
    }
    model = effnet.efficientnet_v2_s()
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


@pytest.mark.parametrize("name, n_features, n_params", [
    ("efficientnet_v2_s", 8, 21_458_488),
    ("efficientnet_v2_m", 9, 54_139_356),
    ("efficientnet_v2_l", 9, 118_515_272),
])
def test_parameter_counts(name, n_features, n_params):
    with torch.device("meta"):  # shapes only, no memory or init cost
        model = getattr(effnet, name)()
    assert len(model.features) == n_features
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert model.classifier[0].p == effnet.V2_CONFIGS[name]["dropout"]


def test_block_structure(v2_s):
    f = v2_s.features
    assert [len(stage) for stage in f[1:7]] == [2, 4, 4, 6, 9, 15]
    assert isinstance(f[1][0], effnet.FusedMBConv) and len(f[1][0].block) == 1
    assert isinstance(f[2][0], effnet.FusedMBConv) and len(f[2][0].block) == 2
    assert isinstance(f[4][0], effnet.MBConv) and len(f[4][0].block) == 4
    assert f[1][0].use_res_connect and not f[2][0].use_res_connect and f[2][1].use_res_connect
    assert not f[5][0].use_res_connect  # stride 1 but 128 -> 160
    # stochastic depth: 0.2 * block_id / 40, linear over all blocks
    assert f[1][0].stochastic_depth.p == 0.0
    assert f[6][14].stochastic_depth.p == pytest.approx(0.2 * 39 / 40)
    bns = [m for m in v2_s.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-3 for m in bns)


def test_forward_eval_64x64(v2_s):
    assert not v2_s.training
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = v2_s(x)
        y2 = v2_s(x)
    assert y.shape == (2, 1000)
    assert torch.isfinite(y).all()
    assert torch.equal(y, y2)  # eval mode: deterministic


def test_batchnorm_calibrated(v2_s):
    bns = [m for m in v2_s.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 for m in bns)  # restored after calibration
    for m in bns:
        assert not torch.allclose(m.running_var, torch.ones_like(m.running_var))
        assert not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean))
    # same seed -> identical model and statistics
    other = effnet.seeded_model("efficientnet_v2_s", seed=0, input_size=64)
    for (k, a), b in zip(v2_s.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
