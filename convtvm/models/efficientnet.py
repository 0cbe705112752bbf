"""EfficientNetV2 (S/M/L) in plain PyTorch, matching torchvision's definition.

Module names reproduce torchvision's ``state_dict`` keys exactly, so its
pretrained weights load with ``strict=True``. torchvision is not required.
"""
import math
from functools import partial

import torch
from torch import nn

__all__ = [
    "EfficientNet",
    "efficientnet_v2_s",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    "calibrate_batchnorm",
    "seeded_model",
]


def _make_divisible(v, divisor=8, min_value=None):
    """Round ``v`` to a multiple of ``divisor`` (never down by more than 10%)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class StochasticDepth(nn.Module):
    """Randomly drop the residual branch (torchvision.ops.StochasticDepth)."""

    def __init__(self, p, mode="row"):
        super().__init__()
        if not 0.0 <= p <= 1.0 or mode not in ("row", "batch"):
            raise ValueError(f"bad stochastic depth p={p} mode={mode}")
        self.p, self.mode = p, mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self):
        return f"p={self.p}, mode={self.mode}"


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + optional activation (Conv2dNormActivation)."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1, norm=nn.BatchNorm2d, act=nn.SiLU):
        layers = [
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            norm(cout),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation with SiLU activation and Sigmoid scale."""

    def __init__(self, channels, squeeze_channels):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class _Block(nn.Module):
    """Shared residual logic of MBConv / FusedMBConv."""

    def forward(self, x):
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out)
            out += x
        return out


class MBConv(_Block):
    """Expand 1x1 -> depthwise kxk -> SE -> project 1x1 (no activation)."""

    def __init__(self, expand_ratio, kernel, stride, cin, cout, sd_prob, norm):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        hidden = _make_divisible(cin * expand_ratio)
        layers = []
        if hidden != cin:
            layers.append(ConvBNAct(cin, hidden, 1, norm=norm))
        layers += [
            ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, norm=norm),
            SqueezeExcitation(hidden, max(1, cin // 4)),
            ConvBNAct(hidden, cout, 1, norm=norm, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob, "row")
        self.out_channels = cout


class FusedMBConv(_Block):
    """Fused kxk expand conv -> project 1x1 (single kxk conv when ratio is 1)."""

    def __init__(self, expand_ratio, kernel, stride, cin, cout, sd_prob, norm):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        hidden = _make_divisible(cin * expand_ratio)
        if hidden != cin:
            layers = [
                ConvBNAct(cin, hidden, kernel, stride, norm=norm),
                ConvBNAct(hidden, cout, 1, norm=norm, act=None),
            ]
        else:
            layers = [ConvBNAct(cin, cout, kernel, stride, norm=norm)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob, "row")
        self.out_channels = cout


F, M = FusedMBConv, MBConv
# (block, expand_ratio, kernel, stride, in_ch, out_ch, num_layers): torchvision's
# _efficientnet_conf for EfficientNetV2 (paper Table 4 and its M/L variants).
V2_CONFIGS = {
    "efficientnet_v2_s": dict(dropout=0.2, stages=[
        (F, 1, 3, 1, 24, 24, 2),
        (F, 4, 3, 2, 24, 48, 4),
        (F, 4, 3, 2, 48, 64, 4),
        (M, 4, 3, 2, 64, 128, 6),
        (M, 6, 3, 1, 128, 160, 9),
        (M, 6, 3, 2, 160, 256, 15),
    ]),
    "efficientnet_v2_m": dict(dropout=0.3, stages=[
        (F, 1, 3, 1, 24, 24, 3),
        (F, 4, 3, 2, 24, 48, 5),
        (F, 4, 3, 2, 48, 80, 5),
        (M, 4, 3, 2, 80, 160, 7),
        (M, 6, 3, 1, 160, 176, 14),
        (M, 6, 3, 2, 176, 304, 18),
        (M, 6, 3, 1, 304, 512, 5),
    ]),
    "efficientnet_v2_l": dict(dropout=0.4, stages=[
        (F, 1, 3, 1, 32, 32, 4),
        (F, 4, 3, 2, 32, 64, 7),
        (F, 4, 3, 2, 64, 96, 7),
        (M, 4, 3, 2, 96, 192, 10),
        (M, 6, 3, 1, 192, 224, 19),
        (M, 6, 3, 2, 224, 384, 25),
        (M, 6, 3, 1, 384, 640, 7),
    ]),
}
del F, M


class EfficientNet(nn.Module):
    """Stem, stages of (Fused)MBConv blocks, 1x1 head conv, pool, dropout, linear."""

    def __init__(self, stages, dropout, stochastic_depth_prob=0.2, num_classes=1000,
                 last_channel=1280, width_mult=1.0, depth_mult=1.0):
        super().__init__()
        norm = partial(nn.BatchNorm2d, eps=1e-3)
        stages = [
            (blk, e, k, s, _make_divisible(ci * width_mult), _make_divisible(co * width_mult),
             int(math.ceil(n * depth_mult)))
            for blk, e, k, s, ci, co, n in stages
        ]
        layers = [ConvBNAct(3, stages[0][4], 3, 2, norm=norm)]
        total_blocks = sum(st[-1] for st in stages)
        block_id = 0
        for blk, e, k, s, ci, co, n in stages:
            stage = []
            for i in range(n):
                sd_prob = stochastic_depth_prob * block_id / total_blocks
                stage.append(blk(e, k, s if i == 0 else 1, ci if i == 0 else co, co, sd_prob, norm))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        layers.append(ConvBNAct(stages[-1][5], last_channel, 1, norm=norm))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _build(name, num_classes=1000, **kwargs):
    cfg = V2_CONFIGS[name]
    return EfficientNet(cfg["stages"], cfg["dropout"], num_classes=num_classes, **kwargs)


def efficientnet_v2_s(num_classes=1000, **kwargs):
    """EfficientNetV2-S (21,458,488 parameters with 1000 classes)."""
    return _build("efficientnet_v2_s", num_classes, **kwargs)


def efficientnet_v2_m(num_classes=1000, **kwargs):
    """EfficientNetV2-M (54,139,356 parameters with 1000 classes)."""
    return _build("efficientnet_v2_m", num_classes, **kwargs)


def efficientnet_v2_l(num_classes=1000, **kwargs):
    """EfficientNetV2-L (118,515,272 parameters with 1000 classes)."""
    return _build("efficientnet_v2_l", num_classes, **kwargs)


@torch.no_grad()
def calibrate_batchnorm(model, input_size, batches=3, batch_size=2, seed=0):
    """Give BN layers non-trivial running stats from seeded random inputs; return model in eval.

    Only BN layers run in train mode (dropout / stochastic depth stay off), and
    momentum is temporarily ``None`` (cumulative average), so the result is a
    deterministic function of ``seed`` and the running stats equal the batch averages.
    """
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for _ in range(batches):
            model(torch.randn(batch_size, *input_size, generator=gen))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
    return model.eval()


_BUILDERS = {
    "efficientnet_v2_s": efficientnet_v2_s,
    "efficientnet_v2_m": efficientnet_v2_m,
    "efficientnet_v2_l": efficientnet_v2_l,
}


def seeded_model(name, seed=0, input_size=64, **kwargs):
    """Build model ``name`` under ``torch.manual_seed(seed)`` and calibrate its BN (eval mode)."""
    torch.manual_seed(seed)
    model = _BUILDERS[name](**kwargs)
    return calibrate_batchnorm(model, input_size, seed=seed)
