"""How a policy head's outputs become one env action per control step, with the state an episode carries.

Torch-free (numpy only): the torch evaluation agent, the ONNX runtime and the HTTP server run the same code, so a
bundle acts exactly as the torch policy it came from.

- ``mlp``: the ``action`` output, nothing carried.
- ``gmm``: the most likely mode's mean (the ``action`` output); with ``sample``, a draw from the mixture
  (``gmm_logits``, ``gmm_means``, ``gmm_stds``) from a generator seeded by the episode's seed.
- ``chunk``: the ``action_chunk`` output (the next H actions). ``open`` executes a chunk to its end before the
  next inference; ``ensemble`` infers every step and averages every chunk that covers the step with ACT's
  weights ``exp(-m * i)``, ``i = 0`` the oldest (Zhao et al. 2023, temporal ensembling, ``m = 0.01``). A head
  with several proposals (``chunk_proposals``, ``chunk_logits``) keeps to its plan: while earlier chunks cover the
  coming steps, it takes the proposal nearest what they planned, so that it never averages two ways round an
  obstacle when their likelihoods are close; with nothing planned (open-loop, or the episode's first step), the
  likeliest.

A policy with a history of N frames sees each camera's last N frames; the executor keeps them
(:meth:`EpisodeExecutor.observe`), repeating the episode's first frame until N have been seen, as the training
loader pads its windows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from imitlab.core.errors import ImitlabError
from imitlab.core.observation_keys import image_keys_of_frames

#: Policy heads: one-step MSE, mixture density, action chunks.
HEADS = ("mlp", "gmm", "chunk")
#: How a chunk head's chunks are executed.
CHUNK_EXECS = ("open", "ensemble")
#: ACT's temporal-ensembling decay m: weight exp(-m * i) for the i-th oldest chunk covering a step.
ENSEMBLE_DECAY = 0.01
#: Graph outputs of each head, in the ONNX model's order; ``action`` (B, A) always comes first.
HEAD_OUTPUTS = {"mlp": ("action",), "gmm": ("action", "gmm_logits", "gmm_means", "gmm_stds"),
                "chunk": ("action", "action_chunk")}
#: The further outputs of a chunk head with several proposals (``chunk_modes`` > 1).
CHUNK_PROPOSAL_OUTPUTS = ("chunk_logits", "chunk_proposals")


def head_outputs(policy_config: Mapping[str, Any]) -> tuple[str, ...]:
    """Graph outputs of the head a policy config (``policy.json``'s or a bundle's) describes, in the ONNX order."""
    head = str(policy_config.get("head", "mlp"))
    proposals = head == "chunk" and int(policy_config.get("chunk_modes", 1)) > 1
    return HEAD_OUTPUTS.get(head, ()) + (CHUNK_PROPOSAL_OUTPUTS if proposals else ())


@dataclass(frozen=True)
class ActOptions:
    """What a user may choose about how a policy acts (``imitlab eval --chunk-exec/--sample``)."""

    chunk_exec: str | None = None
    """A chunk head's execution, ``open`` or ``ensemble`` (None: the policy's own default)."""
    sample: bool = False
    """A gmm head samples from its mixture (seeded per episode) instead of acting on the most likely mode."""


@dataclass(frozen=True)
class Execution:
    """A head and how its outputs are turned into actions; ``Execution.of`` reads it from a policy config."""

    head: str = "mlp"
    chunk_exec: str = "ensemble"
    sample: bool = False
    history: int = 1
    """Frames the policy sees per camera (the current one and those before it)."""

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ImitlabError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.chunk_exec not in CHUNK_EXECS:
            raise ImitlabError(f"chunk exec must be one of {', '.join(CHUNK_EXECS)}, got {self.chunk_exec!r}")
        if self.sample and self.head != "gmm":
            raise ImitlabError(f"sampling needs a gmm head; this policy's head is {self.head}")

    @classmethod
    def of(cls, policy_config: Mapping[str, Any], options: ActOptions = ActOptions()) -> Execution:
        """The execution of a policy config (``policy.json``'s or a bundle's ``policy_config``; older ones have no
        head: ``mlp``) with the user's ``options``."""
        return cls(head=str(policy_config.get("head", "mlp")),
                   chunk_exec=options.chunk_exec or str(policy_config.get("chunk_exec", "ensemble")),
                   sample=options.sample, history=int(policy_config.get("history", 1)))

    @property
    def stateful(self) -> bool:
        """Whether actions depend on more than the current observation's outputs (a chunk's past, a sampling
        generator, earlier frames)."""
        return self.head == "chunk" or self.sample or self.history > 1


class EpisodeExecutor:
    """One episode's execution state; ``act`` is called once per control step, in order."""

    def __init__(self, execution: Execution, seed: int = 0) -> None:
        self.execution = execution
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.chunks: deque[tuple[int, np.ndarray]] = deque()  # (step it was predicted at, (H, A) chunk)
        self.frames: dict[str, deque[np.ndarray]] = {}  # per camera, the last ``history`` frames

    def observe(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This step's observation (one, no batch axis) as the policy takes it: with a history, each camera's last
        N frames stacked (N, H, W, 3), oldest first. Call once per step, before ``act``."""
        history = self.execution.history
        if history == 1:
            return dict(obs)
        stacked = dict(obs)
        for key in image_keys_of_frames(dict(obs)):
            frames = self.frames.setdefault(key, deque([obs[key]] * history, maxlen=history))
            if self.step:  # the first frame is already there, N times
                frames.append(obs[key])
            stacked[key] = np.stack(frames)
        return stacked

    def needs_outputs(self) -> bool:
        """Whether this step needs a fresh inference (open-loop chunks run from the queue until they end)."""
        if self.execution.head != "chunk" or self.execution.chunk_exec == "ensemble" or not self.chunks:
            return True
        start, chunk = self.chunks[-1]
        return self.step - start >= len(chunk)

    def act(self, outputs: Mapping[str, np.ndarray] | None) -> np.ndarray:
        """This step's action (A,) from one observation's outputs (no batch axis; None when ``needs_outputs()``
        is false)."""
        head = self.execution.head
        if outputs is None and self.needs_outputs():
            raise ValueError("this step needs the policy's outputs")
        if head == "chunk":
            action = self._chunk_action(outputs)
        elif self.execution.sample:
            action = self._sample(outputs)
        else:
            action = np.asarray(outputs["action"], np.float32)
        self.step += 1
        return action

    def _chunk_action(self, outputs: Mapping[str, np.ndarray] | None) -> np.ndarray:
        if outputs is not None:
            if self.execution.chunk_exec == "open":
                self.chunks.clear()
            self.chunks.append((self.step, self._chosen_chunk(outputs)))
        while self.step - self.chunks[0][0] >= len(self.chunks[0][1]):  # chunks that end before this step
            self.chunks.popleft()
        return self._planned(1)[0].astype(np.float32)

    def _chosen_chunk(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The likeliest chunk, or of several proposals the one nearest (mean |difference|) the chunks already
        queued planned for the steps they cover."""
        planned = self._planned(len(outputs["action_chunk"])) if "chunk_proposals" in outputs and self.chunks else []
        covered = len(planned)
        if not covered:
            return np.asarray(outputs["action_chunk"], np.float32)
        proposals = np.asarray(outputs["chunk_proposals"], np.float32)  # (K, H, A)
        distances = np.abs(proposals[:, :covered] - planned).mean(axis=(1, 2))
        return proposals[int(np.argmin(distances))]

    def _planned(self, horizon: int) -> np.ndarray:
        """What the queued chunks, ensembled (ACT's weights, oldest first), plan for this step and the next ones they
        cover (at most ``horizon``): (covered steps, A). One gather over the queue, not a loop per step and chunk:
        at every step of an ensembled episode this ran ~100 small numpy calls (a third of a small policy's step)."""
        starts = np.array([start for start, _ in self.chunks])
        chunks = np.stack([chunk for _, chunk in self.chunks])  # (n, H, A), oldest first
        offsets = self.step + np.arange(horizon)[None, :] - starts[:, None]  # (n, horizon): each chunk's index
        covers = offsets < chunks.shape[1]
        # The queued chunks end oldest first, so the chunks covering a step are the newest few, and fewer further on.
        covered = int(covers.any(axis=0).sum())
        rank = np.cumsum(covers[:, :covered], axis=0) - 1  # among the chunks covering a step, oldest first
        weights = np.where(covers[:, :covered], np.exp(-ENSEMBLE_DECAY * rank), 0.0)
        rows = chunks[np.arange(len(chunks))[:, None], np.minimum(offsets[:, :covered], chunks.shape[1] - 1)]
        return np.einsum("ns,nsa->sa", weights, rows) / weights.sum(axis=0)[:, None]

    def _sample(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        logits = np.asarray(outputs["gmm_logits"], np.float64)
        probs = np.exp(logits - logits.max())
        mode = int(self.rng.choice(len(probs), p=probs / probs.sum()))
        means, stds = outputs["gmm_means"][mode], outputs["gmm_stds"][mode]
        draw = means + stds * self.rng.standard_normal(len(means))
        return np.clip(draw, -1.0, 1.0).astype(np.float32)


class BatchExecutor:
    """Episodes in several slots at once (evaluation's lockstep rollouts): an :class:`EpisodeExecutor` each."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution
        self.episodes: dict[int, EpisodeExecutor] = {}

    def reset(self, slot: int, seed: int) -> None:
        self.episodes[slot] = EpisodeExecutor(self.execution, seed)

    def act(self, slots: list[int], obs: Mapping[str, np.ndarray], outputs_of: Any) -> np.ndarray:
        """Actions (len(slots), A) for the slots' stacked observations; ``outputs_of(obs_batch)`` (a dict of batched
        outputs) runs only on the observations of slots that need an inference this step."""
        if self.execution.history > 1:
            seen = [self.episodes[slot].observe({k: v[i] for k, v in obs.items()}) for i, slot in enumerate(slots)]
            obs = {k: np.stack([o[k] for o in seen]) for k in seen[0]}
        need = [i for i, slot in enumerate(slots) if self.episodes[slot].needs_outputs()]
        outputs = outputs_of({k: v[need] for k, v in obs.items()}) if need else {}
        rows = {i: {k: v[j] for k, v in outputs.items()} for j, i in enumerate(need)}
        return np.stack([self.episodes[slot].act(rows.get(i)) for i, slot in enumerate(slots)])

