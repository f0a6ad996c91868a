"""One teleoperated env: steps it with a human's (or, in assist mode, the expert's) actions and keeps the episode.

Every method touches MuJoCo, whose GL context belongs to the thread that created it, so a session is driven
from one thread only (``imitlab/studio/teleop_ws.py`` gives each session its own single-thread executor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import cv2
import gymnasium as gym
import numpy as np

from imitlab.core.errors import ImitlabError
from imitlab.demos.controls import ArmControls, ControlScheme, controls_for
from imitlab.demos.dataset import DemoWriter, Episode
from imitlab.envs import action_labels, make_env, make_expert

#: Who produced a step's action, as stored in the episode's ``intervention`` array.
HUMAN, EXPERT = 1, 0
#: Name of the full-size render in :meth:`TeleopSession.frames` (the other views are the observation's cameras).
VIEW = "view"


@dataclass
class StepReport:
    """What the page shows after a step: where the episode is and what the task says about it."""

    step: int
    reward: float
    success: bool
    done: bool
    controller: str
    action: list[float]
    info: dict[str, float] = field(default_factory=dict)


class TeleopSession:
    """An env built from ``env_id``/``env_kwargs`` with rendering on, its control scheme, and the episode so far.

    ``assist``: the expert drives each episode until the human touches a control; from then on the human does,
    until they hand control back (:meth:`hand_back`). Every step records who was in control.
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any], seed: int = 0, assist: bool = False):
        if not isinstance(env_kwargs, Mapping):
            raise ImitlabError(f"env kwargs must be a JSON object, got {type(env_kwargs).__name__}")
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)
        try:
            self.env: gym.Env = make_env(env_id, render_mode="rgb_array", **self.env_kwargs)
        except ImitlabError:
            raise
        except Exception as exc:  # a constructor rejecting the kwargs: TypeError, ValueError, ...
            raise ImitlabError(f"cannot make {env_id} with {self.env_kwargs}: {str(exc).strip().splitlines()[0]}") from None
        try:
            self.labels = action_labels(env_id, int(self.env.action_space.shape[0]))
            self.controls: ControlScheme = controls_for(self.labels)
        except ImitlabError:
            self.env.close()
            raise
        if isinstance(self.controls, ArmControls):
            self.controls.start_closed = getattr(self.env.unwrapped, "START_FINGERS", None) == 0.0
        self.expert = make_expert(self.env)
        self.assist = assist
        self.control_hz = float(self.env.metadata.get("render_fps", 10))
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Start a new episode on ``seed`` (the episode in progress is dropped)."""
        self.seed = int(seed)
        self.obs, _ = self.env.reset(seed=self.seed)
        self.expert.reset()
        self.controls.reset()
        self.human_in_control = not self.assist
        self._frames: dict[str, list[np.ndarray]] = {k: [] for k in self.obs}
        self._actions: list[np.ndarray] = []
        self._rewards: list[float] = []
        self._who: list[int] = []
        self.info: dict[str, Any] = {}
        self.terminated = self.truncated = False

    @property
    def steps(self) -> int:
        return len(self._actions)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    @property
    def success(self) -> bool:
        return bool(self.info.get("is_success", False))

    def take_over(self) -> None:
        """The human takes control (assist mode: on their first control input), from the expert's last action."""
        if not self.human_in_control and self._actions:
            self.controls.continue_from(self._actions[-1])
        self.human_in_control = True

    def hand_back(self) -> None:
        """Assist mode: the expert drives again."""
        if self.assist:
            self.human_in_control = False

    def step(self, held: set[str], axes: Mapping[str, float] | None = None) -> StepReport:
        """One control step with the held controls (or the expert's action while it is in control)."""
        if self.done:
            raise ImitlabError("the episode is over: save or discard it")
        human = self.controls.step(held, axes)  # also advances the scheme's state (slew, gripper toggle)
        action = human if self.human_in_control else np.asarray(self.expert.act(self.obs), np.float32)
        for key, value in self.obs.items():
            self._frames[key].append(value)
        self._actions.append(action)
        self._who.append(HUMAN if self.human_in_control else EXPERT)
        self.obs, reward, self.terminated, self.truncated, self.info = self.env.step(action)
        self._rewards.append(float(reward))
        return self.report()

    def report(self) -> StepReport:
        return StepReport(
            step=self.steps, reward=self._rewards[-1] if self._rewards else 0.0, success=self.success, done=self.done,
            controller="human" if self.human_in_control else "expert",
            action=[float(a) for a in self._actions[-1]] if self._actions else [0.0] * len(self.labels),
            info={k: float(v) for k, v in self.info.items() if isinstance(v, (float, np.floating)) and k != "is_success"},
        )

    def frames(self) -> dict[str, np.ndarray]:
        """The full-size render plus every camera of the current observation (RGB uint8)."""
        return {VIEW: self.env.render(), **{k: v for k, v in sorted(self.obs.items()) if k.endswith("image")}}

    def episode(self, operator: str) -> Episode:
        """The steps so far as a dataset episode (source ``human``); an episode stopped before the env ended it
        counts as truncated."""
        if not self._actions:
            raise ImitlabError("nothing to save: the episode has no steps yet")
        actions = np.stack(self._actions).astype(np.float32)
        dones = np.zeros(len(actions), np.uint8)
        dones[-1] = 1
        return Episode(
            obs={k: np.stack(v) for k, v in self._frames.items()},
            actions=actions,
            executed_actions=actions.copy(),
            rewards=np.asarray(self._rewards, np.float32),
            dones=dones,
            final_obs=dict(self.obs),
            step_data={"intervention": np.asarray(self._who, np.uint8)},
            attrs={
                "seed": self.seed, "success": self.success, "return": float(np.sum(self._rewards)),
                "length": len(actions), "terminated": bool(self.terminated), "truncated": not self.terminated,
                "noise_std": 0.0, "source": "human", "operator": operator, "assisted": self.assist,
                "env_id": self.env_id, "env_kwargs": self.env_kwargs, "final_metrics": self.report().info,
            },
        )

    def save(self, dataset: Path, operator: str) -> Path:
        """Append the episode to ``dataset`` through the atomic writer; returns the episode file."""
        if not operator.strip():
            raise ImitlabError("enter the operator's name before saving")
        episode = self.episode(operator.strip())
        writer = DemoWriter(dataset, self.env_id, self.env_kwargs, self.env.observation_space, self.env.action_space)
        return writer.append(episode)

    def close(self) -> None:
        self.env.close()


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """RGB uint8 -> JPEG bytes."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImitlabError(f"cannot encode a {image.shape} frame as JPEG")
    return data.tobytes()
