"""The knobs of a training run: ``TrainConfig`` (behaviour cloning) and ``DaggerConfig``, and the TOML file each run
saves. Light on purpose (no torch): ``imitlab train``'s options are derived from these classes when the CLI starts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imitlab.core.action_execution import CHUNK_EXECS, HEADS
from imitlab.core.config_fields import config_values
from imitlab.core.config_files import write_toml
from imitlab.core.errors import ImitlabError
from imitlab.core.limits import DEFAULT_BUDGET_MB

#: The resolved config each run saves (``imitlab train --config <run>/config.toml`` repeats the run).
RUN_CONFIG = "config.toml"


@dataclass
class TrainConfig:
    """Every knob of a behaviour-cloning run, saved in each run as ``config.toml`` (``imitlab train --config`` reads
    it back, and recipes under ``recipes/`` use the same keys).

    To add a knob, add a field here with a type, a default and a docstring (a string literal right below it).
    That is all: it becomes ``imitlab train --<name>`` (underscores as dashes) with the docstring as its help,
    a key of recipe files, ``--set <name>=...`` and part of each run's saved config. Supported types: ``bool``,
    ``int``, ``float``, ``str``, ``X | None`` of those, ``tuple[T, ...]`` of ``int``/``float``/``str`` and
    ``dict[str, Any]`` (see ``imitlab/core/config_fields.py``). Range checks go in ``__post_init__``.
    """

    dataset: str
    """Dataset folder written by ``imitlab record``."""
    out: str
    """Run folder: ``best/`` and ``last/`` policies, ``train_log.json``, TensorBoard events in ``tb/``."""
    extra_datasets: tuple[str, ...] = ()
    """More dataset folders of the same env and kwargs trained on together (e.g. DAgger's episodes)."""
    init_policy: str | None = None
    """Start from this saved policy's weights (same backbone) instead of a fresh head, e.g. DAgger's last round."""
    backbone: str = "lite0"
    """``lite0`` (EfficientNet-Lite0, ImageNet weights) or ``nature_cnn`` (small CNN from scratch)."""
    pretrained: bool = True
    """Start the backbone from ImageNet weights (lite0 only)."""
    pooling: str = "avg"
    """lite0 pooling: ``avg`` (global average of the last map) or ``spatial_softmax`` (keypoints from the
    stride-16 map: keeps where objects are; the choice for manipulation)."""
    keypoints: int = 32
    """Keypoints of ``spatial_softmax`` pooling."""
    freeze_backbone: bool = False
    """Train only the head; backbone features are computed once, so epochs cost almost nothing."""
    freeze_blocks: int = 0
    """lite0: keep the stem and the first N-1 MBConv blocks at their ImageNet weights and compute their output
    once per frame, then fine-tune the rest on that cache (6 = everything at stride <= 8: ~3x faster
    epochs). Frames are encoded once, so no random-shift augmentation."""
    freeze_batchnorm: bool = False
    """lite0: normalise with the ImageNet BatchNorm statistics while fine-tuning too. Otherwise training uses batch
    statistics and rollouts the running ones, which can compute a different function (on Push the training
    frames' loss was far higher in eval mode)."""
    backbone_lr: float = 3e-4
    """Learning rate of the backbone when fine-tuning (lower than the head's keeps pretrained features)."""
    head_lr: float = 1e-3
    """Learning rate of the fusion head (a ``chunk`` head's transformer trains at 0.3 times it, ``heads.LR_SCALES``)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    batch_size: int = 64
    """Minibatch size."""
    epochs: int = 10
    """Passes over the training split."""
    augment_shift: int = 4
    """Random-shift augmentation (DrQ): pad by this many pixels and crop back; 0 turns it off."""
    val_fraction: float = 0.1
    """Fraction of episodes held out to report validation loss (the dataset's train/valid masks, when it has them,
    decide instead)."""
    eval_every: int = 1
    """Closed-loop validation every this many epochs (and after the last)."""
    eval_episodes: int = 8
    """Validation rollouts per check, on seeds from VALIDATION_SEED_START (never demo or test seeds)."""
    patience: int = 0
    """Stop after this many validations without a better rollout score (0: never stop early)."""
    successful_only: bool = True
    """Train only on episodes the demonstrator completed."""
    loader_mode: str = "auto"
    """``memory`` (decode the demos once), ``chunked`` (stream them from disk every epoch) or ``auto`` (memory
    when the decoded demos fit ``memory_budget_mb``)."""
    memory_budget_mb: float = DEFAULT_BUDGET_MB
    """MiB of decoded demos allowed in memory; ``chunked`` streams in chunks that stay within it."""
    head_hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of the fusion head (``mlp`` and ``gmm``)."""
    head: str = "mlp"
    """Policy head: ``mlp`` (one action, MSE: the baseline), ``gmm`` (a mixture of ``gmm_modes`` Gaussians, negative
    log-likelihood: keeps the modes of multimodal demos apart) or ``chunk`` (ACT-style transformer predicting the
    next ``chunk_size`` actions from the image's spatial tokens and the state, L1). With category observations,
    gmm and chunk heads need ``command_head concat``."""
    gmm_modes: int = 5
    """Mixture modes of the ``gmm`` head."""
    chunk_size: int = 10
    """Actions the ``chunk`` head predicts at once."""
    chunk_modes: int = 1
    """Chunks the ``chunk`` head proposes per frame, each with a logit, trained winner-takes-all (the nearest to the
    demo's chunk learns it): L1 on one chunk learns a chunk between two ways the demos went."""
    chunk_exec: str = "ensemble"
    """How the ``chunk`` head acts in validation rollouts and, unless ``imitlab eval --chunk-exec`` says
    otherwise, after training: ``open`` (execute a whole chunk, then infer again) or ``ensemble`` (infer every
    step and average the chunks that cover it, ACT's temporal ensembling)."""
    history: int = 1
    """Frames per camera the policy sees: the current one and the N-1 before it, encoded one by one by the shared
    encoder and stacked for the head (the loader serves each sample's window of frames without copying the
    dataset; the start of an episode repeats its first frame). Not with frozen-feature caches, DAgger or nproc."""
    command_head: str = "branched"
    """How a dataset's category observations (``Discrete`` keys, e.g. Town-v0's route ``command``) condition the
    policy: ``branched`` (one head per command, the command selects its output: conditional imitation learning,
    Codevilla et al. 2018) or ``concat`` (the command one-hot, fed to one head with the image features and
    state). Ignored for envs without category observations."""
    ema_decay: float = 0.0
    """Validate and save an exponential moving average of the weights, with this decay per step (0: the raw
    weights). The average is steadier than the last step's weights, whose rollout success can swing by tens of
    points from one epoch to the next. Its decay ramps up from 0 over the first steps, so the random initial
    weights fade out quickly."""
    seed: int = 0
    """Seed for the split, initialisation and minibatch order."""
    threads: int = 0
    """torch CPU threads, and the loader's image-decoding threads (0: all cores, shared among ``nproc``)."""
    device: str = "auto"
    """``cpu``, ``cuda`` (bf16 autocast, pinned non-blocking transfers) or ``auto`` (CUDA when present)."""
    compile: bool = False
    """Compile the training step's forward pass (and with it the backward) with ``torch.compile`` (inductor, which
    needs a C++ compiler): 7-20 s per batch shape, two per run (full batches and the last), then nature_cnn's steps
    run ~1.05x (fp32) to ~1.1x (on top of bf16) faster on a 2-core CPU (``benchmarks/bench_train.py``). Frozen-feature
    caches train their head uncompiled; not with ``nproc``."""
    precision: str = "auto"
    """Training's forward pass: ``bf16`` (autocast; weights, gradients and the optimiser stay fp32), ``fp32``, or
    ``auto`` (bf16 on CUDA, fp32 on the CPU). On a CPU with native bf16 (AMX or AVX512-BF16, ``lscpu``) bf16 trains
    nature_cnn about 1.4x faster; on others it is slower. Validation, export and serving stay fp32."""
    nproc: int = 1
    """Data-parallel training processes on this machine (torch.distributed: gloo on CPU, NCCL on CUDA); each
    decodes its shard of the episodes and rank 0 alone validates, checkpoints and logs. ``torchrun`` works too.
    The same seed and global ``batch_size`` give one process's loss curve (to float tolerance)."""
    grad_clip_norm: float = 0.0
    """Scale the gradients down to this total norm when they exceed it (0: no clipping)."""
    max_nonfinite_steps: int = 10
    """Steps with a NaN or infinite loss or gradient are skipped and counted; this many in a row stop the run."""
    resume: bool = False
    """Continue the run in ``out`` from its last epoch's checkpoint (same settings; bit for bit on CPU with the
    same threads) instead of starting a new one."""
    overwrite: bool = False
    """Replace ``out`` if it already holds something (otherwise a non-empty ``out`` is refused)."""
    progress: bool = True
    """Show progress bars."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the run."""

    def __post_init__(self) -> None:
        """A value out of range is one line naming the knob, from a file, a flag or Python alike."""
        at_least = {"keypoints": 1, "freeze_blocks": 0, "batch_size": 1, "epochs": 1, "augment_shift": 0,
                    "eval_every": 1, "eval_episodes": 1, "patience": 0, "threads": 0, "memory_budget_mb": 0,
                    "grad_clip_norm": 0, "max_nonfinite_steps": 1, "nproc": 1,
                    "gmm_modes": 1, "chunk_size": 1, "chunk_modes": 1, "history": 1}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ImitlabError(f"{name}: must be at least {low}, got {getattr(self, name)!r}")
        if not 0.0 <= self.val_fraction <= 0.9:
            raise ImitlabError(f"val_fraction: must be in [0, 0.9], got {self.val_fraction!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ImitlabError(f"ema_decay: must be in [0, 1), got {self.ema_decay!r}")
        from imitlab.policies.command import COMMAND_HEADS  # torch: only when a config is made
        from imitlab.policies.encoders import BACKBONES, POOLINGS
        from imitlab.policies.device import PRECISIONS

        for name, choices in (("backbone", BACKBONES), ("pooling", POOLINGS), ("command_head", COMMAND_HEADS),
                              ("head", HEADS), ("chunk_exec", CHUNK_EXECS), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise ImitlabError(f"{name}: must be one of {', '.join(choices)}, got {getattr(self, name)!r}")


#: The table of a run config (recipe or saved ``config.toml``) that holds the DaggerConfig knobs.
DAGGER_TABLE = "dagger"


@dataclass
class DaggerConfig:
    """A DAgger run: an initial BC run, then ``rounds`` of collect-and-retrain."""

    train: TrainConfig
    """The initial behaviour-cloning run; its ``out`` is the DAgger run folder."""
    rounds: int = 0
    """Collect-and-retrain rounds after the initial BC (0: plain behaviour cloning, no DAgger)."""
    episodes: int = 10
    """Episodes the mixture policy drives per round."""
    beta: float = 0.5
    """Probability that the expert acts in round 1; decays geometrically by ``beta_decay`` each round."""
    beta_decay: float = 0.5
    """Per-round factor on ``beta``."""
    epochs: int | None = None
    """Fine-tuning epochs per round (default: the initial run's epochs)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the run."""


def save_run_config(path: Path, config: TrainConfig, **tables: dict[str, Any]) -> None:
    """Write ``config`` (plus tables such as DAgger's) as TOML: ``imitlab train --config <path>`` repeats the run."""
    write_toml(path, {**_jsonable(asdict(config)), **tables},
               comment="The resolved config of an imitlab train run; `imitlab train --config <this file>` repeats it.")


def save_dagger_config(path: Path, config: DaggerConfig) -> None:
    """The run's config with DAgger's knobs in its ``[dagger]`` table: ``imitlab train --config`` repeats the run."""
    table = _jsonable(config_values(config, exclude=("train",)))
    save_run_config(path, config.train, **{DAGGER_TABLE: table})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
