"""The torch models minidyn trains and attacks.

Every model takes a batch of images in NCHW layout with pixels in [0, 1] and returns logits of
shape (B, num_classes). No input normalisation is applied (none of the paper's models uses one;
the BatchNorm layers follow the first convolutions), so `[0, 1]` images can be fed straight in,
by minidyn's attacks or by outside libraries (torchattacks, AutoAttack).

Models and their choices (`build_model(name, input_shape, num_classes)`):

- ``softmax``: Flatten, Linear(in, C) (parameters ``fc1.*``).
- ``mlp``: Flatten, Linear(in, 256), ReLU, Linear(256, 256), ReLU, Linear(256, C)
  (``fc1.*``, ``fc2.*``, ``fc3.*``). Same names and layouts as the NumPy backend's models.
- ``cnn4`` (the paper's MNIST net): conv32 3x3 - BN - ReLU - maxpool2, conv64 3x3 - BN - ReLU -
  maxpool2, flatten, dense 128 - ReLU, dense C. Convolutions use "same" padding (1), so a 28x28
  image gives 14x14 then 7x7 maps (64*7*7 = 3136 features); a 32x32 image gives 8x8. The hidden
  width 128 and the padding are those of the authors' Keras code (``models.py`` of
  YisenWang/dynamic_adv_training); the paper only says "dense, dense".
- ``cnn8`` (the paper's CIFAR-10 net): three blocks of [conv-BN-ReLU, conv-BN-ReLU, maxpool2]
  with 64, 128 and 196 channels, flatten, dense 256 - BN - ReLU, dense C. Widths 64/128/196 and
  the BatchNorm after the 256-unit dense layer follow the authors' Keras code (where this net
  is written out, although commented out in favour of a WRN). 32x32 -> 4x4x196 = 3136
  features; 28x28 -> 3x3x196.
- ``wrn-D-W``: WideResNet (Zagoruyko & Komodakis 2016) of depth D and widen factor W, with
  (D - 4) % 6 == 0, as in Madry et al.'s and TRADES's PyTorch port (pre-activation basic
  blocks, widths 16, 16W, 32W, 64W, no dropout, final BN-ReLU, global average pool, linear).
  ``wrn-34-10`` has 46,160,474 parameters for 10 classes.
- ``preact-resnet18`` / ``preact-resnet50``: pre-activation ResNets (He et al. 2016, "Identity
  mappings"): a CIFAR-style stem (one 3x3 conv, stride 1, no max-pool), basic blocks [2,2,2,2]
  for 18 and bottleneck blocks [3,4,6,3] (expansion 4) for 50, a final BN-ReLU, global
  average pool and a linear layer.

All convolutional models pool adaptively or compute their flatten size from `input_shape`, so
both (1, 28, 28) and (3, 32, 32) inputs work. The model records what it was built from in
``model.minidyn_arch`` ({"model", "input_shape", "num_classes"}) so checkpoints describe
themselves.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import torch
from torch import nn

from minidyn.errors import ConfigError

MODEL_NAMES: tuple[str, ...] = (
    "softmax",
    "mlp",
    "cnn4",
    "cnn8",
    "wrn-16-2",
    "wrn-28-10",
    "wrn-34-10",
    "preact-resnet18",
    "preact-resnet50",
)
"""Names `build_model` accepts; any ``wrn-<depth>-<width>`` with (depth - 4) % 6 == 0 works too."""

_WRN_RE = re.compile(r"^wrn-(\d+)-(\d+)$")


# --- small models ------------------------------------------------------------------------------
class Softmax(nn.Module):
    """Multinomial logistic regression: Flatten, Linear(in, C)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.flatten(x))


class MLP(nn.Module):
    """Flatten, Linear(in, 256), ReLU, Linear(256, 256), ReLU, Linear(256, C)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(self.flatten(x)))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


# --- the paper's CNNs --------------------------------------------------------------------------
def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CNN4(nn.Module):
    """The paper's MNIST network (see the module docstring)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 128):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            *_conv_bn_relu(c, 32), nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64), nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * (h // 4) * (w // 4), hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        nn.init.kaiming_normal_(self.fc1.weight, nonlinearity="relu")  # Keras he_normal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.features(x))
        return self.fc2(torch.relu(self.fc1(x)))


class CNN8(nn.Module):
    """The paper's CIFAR-10 network (see the module docstring)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int,
                 widths: Sequence[int] = (64, 128, 196), hidden: int = 256):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for width in widths:
            layers += _conv_bn_relu(c, width) + _conv_bn_relu(width, width) + [nn.MaxPool2d(2)]
            c = width
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        n = len(widths)
        self.fc1 = nn.Linear(c * (h >> n) * (w >> n), hidden, bias=False)
        self.bn_fc1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        nn.init.kaiming_normal_(self.fc1.weight, nonlinearity="relu")  # Keras he_normal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.features(x))
        return self.fc2(torch.relu(self.bn_fc1(self.fc1(x))))


# --- WideResNet --------------------------------------------------------------------------------
class _WideBlock(nn.Module):
    """Pre-activation basic block of the Madry/TRADES WideResNet port."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.equal = cin == cout and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(act))))
        # As in the reference port, a projection shortcut takes the pre-activated input.
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, input_shape: Sequence[int], num_classes: int):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0 or widen < 1:
            raise ConfigError(
                f"wrn-{depth}-{widen}: WideResNet depth must satisfy (depth - 4) % 6 == 0 "
                "(10, 16, 22, 28, 34, 40, ...) and width must be >= 1"
            )
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False)
        groups = []
        for g, stride in zip(range(3), (1, 2, 2)):
            blocks = [_WideBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                                 stride if i == 0 else 1) for i in range(n)]
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = torch.relu(self.bn(x))
        return self.fc(self.flatten(self.pool(x)))


# --- pre-activation ResNets --------------------------------------------------------------------
class _PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        cout = planes * self.expansion
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.relu(self.bn1(x))
        short = x if self.shortcut is None else self.shortcut(act)
        out = self.conv1(act)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + short


class _PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.relu(self.bn1(x))
        short = x if self.shortcut is None else self.shortcut(act)
        out = self.conv1(act)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + short


class PreActResNet(nn.Module):
    def __init__(self, block: type, num_blocks: Sequence[int], input_shape: Sequence[int], num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 64, 3, padding=1, bias=False)
        cin = 64
        layers = []
        for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(block(cin, planes, stride if i == 0 else 1))
                cin = planes * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.relu(self.bn(x))
        return self.linear(self.flatten(self.pool(x)))


# --- the factory -------------------------------------------------------------------------------
def _names_hint() -> str:
    return ", ".join(MODEL_NAMES) + ", or any wrn-<depth>-<width> with (depth - 4) % 6 == 0"


def _image_shape(name: str, input_shape: tuple[int, ...], min_side: int) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(f"model {name} needs images of shape (channels, height, width), got {input_shape}")
    c, h, w = input_shape
    if h < min_side or w < min_side:
        raise ConfigError(f"model {name} needs images of at least {min_side}x{min_side} pixels, got {h}x{w}")
    return c, h, w


def build_model(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A freshly initialised model (on the CPU, from torch's global RNG); see the module docstring.

    Raises ConfigError for an unknown name or an input shape the model cannot take.
    """
    key = str(name).strip().lower()
    shape = tuple(int(s) for s in input_shape)
    num_classes = int(num_classes)
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"invalid input shape {shape} for model {name}")
    if num_classes < 2:
        raise ConfigError(f"model {name} needs at least 2 classes, got {num_classes}")
    in_features = math.prod(shape)
    wrn = _WRN_RE.match(key)
    if key == "softmax":
        model: nn.Module = Softmax(in_features, num_classes)
    elif key == "mlp":
        model = MLP(in_features, num_classes)
    elif key == "cnn4":
        model = CNN4(_image_shape(key, shape, 4), num_classes)
    elif key == "cnn8":
        model = CNN8(_image_shape(key, shape, 8), num_classes)
    elif wrn:
        model = WideResNet(int(wrn.group(1)), int(wrn.group(2)), _image_shape(key, shape, 4), num_classes)
    elif key == "preact-resnet18":
        model = PreActResNet(_PreActBlock, (2, 2, 2, 2), _image_shape(key, shape, 8), num_classes)
    elif key == "preact-resnet50":
        model = PreActResNet(_PreActBottleneck, (3, 4, 6, 3), _image_shape(key, shape, 8), num_classes)
    else:
        raise ConfigError(f"unknown model {name!r}; choose one of {_names_hint()}")
    model.minidyn_arch = {"model": key, "input_shape": list(shape), "num_classes": num_classes}
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics not included)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
