"""The built-in model families: `convnet`, the seed's LeNet-like CNN (conv 3×3 → ReLU → max-pool 2
blocks, then fc layers), and `resnet`, a small residual network (for layer pruning).

Teacher: conv [32, 64], fc [128] -> 10.  Student: conv [16, 32], fc [128] -> 10.
Sublayers are named conv1.., fc1.. so recipes can point at them (feature distillation,
and later pruning / low-rank transforms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from edgepipe.pipeline.core.config import OPTIONAL, require, to_dict


@dataclass(frozen=True)
class ModelSpec:
    TAG: ClassVar[str] = "family"  # the key that selects this source in a `model:` mapping (the default one)
    family: Literal["convnet", "resnet"] = "convnet"
    conv: tuple[int, ...] = (32, 64)  # convnet: one conv + 2× pool each; resnet: one stage of `blocks` each
    fc: tuple[int, ...] = (128,)
    num_classes: int = 10
    in_channels: int = 1
    input_size: int = 28
    kernel: int = 3
    blocks: int = 2  # resnet: basic residual blocks per stage (stages after the first halve the size)
    weights: str | None = field(default=None, metadata=OPTIONAL)  # a state dict (.pdparams) to start from

    def __post_init__(self):
        require(
            len(self.conv) >= 1 and all(c >= 1 for c in self.conv), "conv", "needs at least one positive channel count"
        )
        require(all(f >= 1 for f in self.fc), "fc", "sizes must be positive")
        require(self.kernel % 2 == 1, "kernel", "must be odd (padding keeps the size)")
        require(
            self.family != "convnet" or self.input_size % (2 ** len(self.conv)) == 0,
            "input_size",
            f"must be divisible by 2**{len(self.conv)} (one 2× pool per conv)",
        )
        require(self.blocks >= 1, "blocks", "must be at least 1")
        require(self.num_classes >= 2, "num_classes", "must be at least 2")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)

    @property
    def name(self) -> str:
        return self.family

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ModelSpec":
        from edgepipe.pipeline.core.config import from_dict

        return from_dict(cls, d, "spec")


def build_model(spec: ModelSpec, name_prefix: str | None = None):
    """The built-in network a ModelSpec describes: the seed's plain conv net or a small ResNet."""
    import paddle

    # A fresh name counter per model: parameter names (which paddle2onnx writes into the ONNX
    # file and paddle.save into .pdparams) then do not depend on how many layers the process
    # built before, so a stage produces the same bytes in a full run and in a --from run.
    # name_prefix keeps several models trained by one optimizer apart (deep mutual learning).
    with paddle.utils.unique_name.guard(name_prefix):
        return _resnet(spec) if spec.family == "resnet" else _convnet(spec)


def _convnet(spec: ModelSpec):
    """conv-ReLU-maxpool blocks, then Linear layers (the seed's LeNet-like teacher and student)."""
    import paddle
    import paddle.nn as nn

    class ConvNet(nn.Layer):
        def __init__(self):
            super().__init__()
            chans = [spec.in_channels, *spec.conv]
            for i in range(len(spec.conv)):
                self.add_sublayer(
                    f"conv{i + 1}", nn.Conv2D(chans[i], chans[i + 1], spec.kernel, padding=spec.kernel // 2)
                )
            self.n_conv = len(spec.conv)
            side = spec.input_size // 2 ** len(spec.conv)
            dims = [spec.conv[-1] * side * side, *spec.fc, spec.num_classes]
            for i in range(len(dims) - 1):
                self.add_sublayer(f"fc{i + 1}", nn.Linear(dims[i], dims[i + 1]))
            self.n_fc = len(dims) - 1
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2D(kernel_size=2, stride=2)

        def forward(self, x):
            for i in range(self.n_conv):
                x = self.pool(self.relu(getattr(self, f"conv{i + 1}")(x)))
            x = paddle.flatten(x, 1)
            for i in range(self.n_fc):
                x = getattr(self, f"fc{i + 1}")(x)
                if i < self.n_fc - 1:
                    x = self.relu(x)
            return x

    return ConvNet()


def _resnet(spec: ModelSpec):
    """A stem, stages of BasicBlocks (stride 2 from the second on), global average pool, Linear layers."""
    import paddle
    import paddle.nn as nn

    class BasicBlock(nn.Layer):
        """conv-BN-ReLU-conv-BN plus the shortcut (a strided 1×1 conv + BN where the shape changes)."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            k = spec.kernel
            self.conv1 = nn.Conv2D(cin, cout, k, stride=stride, padding=k // 2, bias_attr=False)
            self.bn1 = nn.BatchNorm2D(cout)
            self.conv2 = nn.Conv2D(cout, cout, k, padding=k // 2, bias_attr=False)
            self.bn2 = nn.BatchNorm2D(cout)
            self.relu = nn.ReLU()
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2D(cin, cout, 1, stride=stride, bias_attr=False), nn.BatchNorm2D(cout)
                )

        def forward(self, x):
            short = x if self.downsample is None else self.downsample(x)
            return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + short)

    class ResNet(nn.Layer):
        def __init__(self):
            super().__init__()
            k = spec.kernel
            self.stem = nn.Sequential(
                nn.Conv2D(spec.in_channels, spec.conv[0], k, padding=k // 2, bias_attr=False),
                nn.BatchNorm2D(spec.conv[0]),
                nn.ReLU(),
            )
            cin = spec.conv[0]
            for i, w in enumerate(spec.conv):
                blocks = [
                    BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(spec.blocks)
                ]
                self.add_sublayer(f"stage{i + 1}", nn.Sequential(*blocks))
                cin = w
            self.n_stage = len(spec.conv)
            self.pool = nn.AdaptiveAvgPool2D(1)
            dims = [spec.conv[-1], *spec.fc, spec.num_classes]
            for i in range(len(dims) - 1):
                self.add_sublayer(f"fc{i + 1}", nn.Linear(dims[i], dims[i + 1]))
            self.n_fc = len(dims) - 1
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.stem(x)
            for i in range(self.n_stage):
                x = getattr(self, f"stage{i + 1}")(x)
            x = paddle.flatten(self.pool(x), 1)
            for i in range(self.n_fc):
                x = getattr(self, f"fc{i + 1}")(x)
                if i < self.n_fc - 1:
                    x = self.relu(x)
            return x

    return ResNet()
