"""Model registry: the classic lottery-ticket architectures, sized to the dataset's input.

Every factory takes (cfg, input_shape, num_classes) and returns an un-initialised `nn.Module`;
`build` applies the configured initialisation under the run's seed. Prunable layers are discovered
(`engine.masks.prunable`), so users' own modules need nothing special.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .config import ModelConfig
from .errors import ConfigError
from .registry import MODELS
from . import transformer  # noqa: E402  (registers minilm, bert-tiny; hf:PATH_OR_ID)


def _w(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


class MLP(nn.Module):
    """Fully connected ReLU net; flattens its input. `lenet300` is MLP(in, [300, 100], 10)."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int):
        super().__init__()
        sizes = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.out = nn.Linear(sizes[-1], num_classes)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.out(x)

    def as_sequential(self) -> nn.Sequential:
        """The same computation as a chain of its own modules (engine.shrink reads chains)."""
        return nn.Sequential(nn.Flatten(), *[m for layer in self.hidden for m in (layer, nn.ReLU())], self.out)


class ConvNet(nn.Module):
    """Frankle & Carbin's Conv-2/4/6: pairs of 3x3 convs, each pair followed by 2x2 max-pool, then
    FC 256-256-classes."""

    def __init__(self, in_shape: tuple[int, ...], pairs: list[int], num_classes: int, width: float):
        super().__init__()
        c, h, w = in_shape
        layers = []
        for ch in pairs:
            ch = _w(ch, width)
            layers += [nn.Conv2d(c, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c, h, w = ch, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(c * h * w, _w(256, width))
        self.fc2 = nn.Linear(_w(256, width), _w(256, width))
        self.out = nn.Linear(_w(256, width), num_classes)

    def forward(self, x):
        x = self.features(x).flatten(1)
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))

    def as_sequential(self) -> nn.Sequential:
        """The same computation as a chain of its own modules (engine.shrink reads chains)."""
        return nn.Sequential(*self.features, nn.Flatten(), self.fc1, nn.ReLU(), self.fc2, nn.ReLU(), self.out)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # 1x1 projection, as in OpenLTH's CIFAR ResNets
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """He et al.'s CIFAR ResNet-(6n+2): three stages of n basic blocks at 16/32/64 x width channels."""

    def __init__(self, in_channels: int, n: int, num_classes: int, width: float):
        super().__init__()
        widths = [_w(16, width), _w(32, width), _w(64, width)]
        self.conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        blocks, cin = [], widths[0]
        for stage, cout in enumerate(widths):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.out(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _flat(shape) -> int:
    return math.prod(shape)


def _image(shape, model: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ConfigError("model.model", model, f"needs image data (C, H, W); this dataset's examples have "
                          f"shape {tuple(shape)}: use lenet300 or mlp")
    return tuple(shape)


@MODELS.register("lenet300", "LeNet-300-100 MLP (Frankle & Carbin), input size adapted to the data")
def _lenet300(cfg: ModelConfig, shape, classes):
    return MLP(_flat(shape), [_w(300, cfg.width), _w(100, cfg.width)], classes)


@MODELS.register("mlp", "ReLU MLP with --hidden widths (x --width)")
def _mlp(cfg: ModelConfig, shape, classes):
    return MLP(_flat(shape), [_w(h, cfg.width) for h in cfg.hidden], classes)


def _conv(pairs):
    def make(cfg: ModelConfig, shape, classes):
        c, h, w = _image(shape, cfg.model)
        if min(h, w) < 2 ** len(pairs):
            raise ConfigError("model.model", cfg.model, f"pools {len(pairs)} times; images of {h}x{w} are too "
                              "small")
        return ConvNet((c, h, w), pairs, classes, cfg.width)
    return make


MODELS.register("conv2", "Conv-2 (64-64-pool, FC 256-256)")(_conv([64]))
MODELS.register("conv4", "Conv-4 (64-64-pool-128-128-pool, FC 256-256)")(_conv([64, 128]))
MODELS.register("conv6", "Conv-6 (64-64-pool-128-128-pool-256-256-pool, FC 256-256)")(_conv([64, 128, 256]))


@MODELS.register("resnet20", "CIFAR ResNet-20 with BatchNorm (x --width channels)")
def _resnet20(cfg: ModelConfig, shape, classes):
    c, _, _ = _image(shape, cfg.model)
    return ResNetCifar(c, 3, classes, cfg.width)


# ---------------------------------------------------------------- initialisation
def initialise(model: nn.Module, scheme: str, generator: torch.Generator) -> nn.Module:
    """Initialise Linear/Conv weights with `scheme` from `generator`; biases 0, norms (1, 0).

    `torch_default` calls each layer's own `reset_parameters()`, which is also how a user's own
    module is re-initialised for the `reinit` control. A transformer (engine.transformer) draws all its
    weights as BERT does, pre-trained or not (the `reinit` control of a pre-trained model starts from scratch).
    """
    if hasattr(model, "init_from_seed"):
        model.init_from_seed(generator, keep_pretrained=False)
        return model
    with torch.no_grad():
        for m in model.modules():
            if scheme == "torch_default":
                if hasattr(m, "reset_parameters") and next(m.parameters(recurse=False), None) is not None:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
                        m.reset_parameters()
            elif isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                w = m.weight
                cpu = torch.empty(w.shape)
                if scheme == "kaiming_normal":
                    fan_in = w[0].numel()
                    cpu.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
                elif scheme == "kaiming_uniform":
                    bound = math.sqrt(6.0 / w[0].numel())
                    cpu.uniform_(-bound, bound, generator=generator)
                elif scheme == "signed_constant":  # +-sqrt(2/fan_in): Edge-Popup's best weights for supermasks
                    cpu.normal_(0.0, 1.0, generator=generator)
                    cpu = cpu.sign() * math.sqrt(2.0 / w[0].numel())
                elif scheme == "xavier_normal":
                    fan_in, fan_out = w[0].numel(), w.shape[0] * w[0][0].numel()
                    cpu.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)
                else:
                    raise ConfigError("model.init", scheme, "unknown initialisation")
                w.copy_(cpu)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._NormBase) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
    return model


def build(cfg: ModelConfig, input_shape, num_classes: int, seed: int) -> nn.Module:
    """A freshly initialised model. Same (cfg, shapes, seed) -> bit-identical weights."""
    factory = transformer.factory_for(cfg.model) or MODELS.get(cfg.model, "model.model")
    model = factory(cfg, tuple(input_shape), num_classes)
    if hasattr(model, "init_from_seed"):  # pre-trained transformers: theta_0 = pre-trained weights + seeded heads
        model.init_from_seed(torch.Generator().manual_seed(seed))
        return model
    if cfg.bayesian:  # mu is the layer's weight: initialised below exactly as the deterministic net's
        from . import bayes
        bayes.convert(model, bayes.Options.of(cfg))
    g = torch.Generator().manual_seed(seed)
    return initialise(model, cfg.init, g)
