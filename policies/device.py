"""Where a policy runs: ``--device auto|cpu|cuda`` of training and evaluation, and what CUDA adds to a step.

On CUDA a training step runs under bf16 autocast (no loss scaling needed, unlike fp16; on the CPU when asked),
minibatches travel from pinned memory without blocking the host, and convolutions keep the channels-last layout the
encoders already use.
Weights are saved from CPU copies (safetensors), so a checkpoint does not depend on the device that wrote it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, ContextManager

import torch

from imitlab.core.errors import ImitlabError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else the CPU; ``cuda`` without one is one error line. A rank started
    by ``torchrun`` or ``train --nproc`` takes the GPU of its ``LOCAL_RANK``."""
    if name not in DEVICES:
        raise ImitlabError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ImitlabError(f"--device cuda: torch {torch.__version__} sees no CUDA device "
                           f"(built with CUDA {torch.version.cuda or 'none'}); use --device cpu or auto")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


#: ``TrainConfig.precision``: ``auto`` is bf16 on CUDA and fp32 on the CPU.
PRECISIONS = ("auto", "fp32", "bf16")


def autocast(device: torch.device, precision: str = "auto") -> ContextManager[Any]:
    """bf16 mixed precision on CUDA unless ``precision`` is fp32; on the CPU only when it is bf16, since CPUs without
    native bf16 (AVX512-BF16, AMX) run it slower than fp32, and those with it ~1.4x faster (benchmarks/bench_train.py)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def transfer(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``: from pinned memory and without blocking the host on CUDA, as is on the CPU."""
    if device.type != "cuda" or tensor.device == device:
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
