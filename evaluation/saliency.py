"""What is the policy looking at? Attribution heat maps over its camera images, rollout videos with them, and the
model-randomisation sanity check of Adebayo et al. (2018, "Sanity checks for saliency maps").

Two methods:

- ``gradcam`` (Selvaraju et al. 2017) on the encoder's last feature map: the map's channels weighted by the mean
  gradient of the target, ReLU, upsampled. One forward and backward pass per frame.
- ``occlusion`` (Zeiler & Fergus 2014): grey out a square patch at every position and measure how far the action
  moves (L2); slower (one batched pass of all patch positions per frame) but needs no gradients or internals.

The target of a continuous policy is the action's squared norm, ``0.5 * ||a||^2``: its gradient is ``a . da/dx``,
which points to what would make the policy do more of what it is doing now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn
from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.envs import action_labels, make_env
from imitlab.evaluation.video import annotate_frame, write_mp4
from imitlab.policies import ImagePolicy, load_policy
from imitlab.policies.encoders import Lite0Encoder, NatureCNNEncoder
from imitlab.policies.io import policy_dir

METHODS = ("gradcam", "occlusion")
#: Grey of an occluding patch (mid-range uint8).
OCCLUSION_GREY = 127


def last_feature_map(policy: ImagePolicy) -> nn.Module:
    """The encoder module whose output is its last spatial feature map (what Grad-CAM weighs)."""
    encoder = policy.encoder
    if isinstance(encoder, NatureCNNEncoder):
        return encoder.cnn[-2]  # ReLU after the third convolution, before Flatten
    if isinstance(encoder, Lite0Encoder):
        return encoder.blocks[-1] if encoder.spatial else encoder.pool
    raise ImitlabError(f"no Grad-CAM layer known for {type(encoder).__name__}")


def _tensors(policy: ImagePolicy,
             obs: dict[str, np.ndarray]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """A batched observation -> (state, images, categories) tensors as ``ImagePolicy.forward`` takes them."""
    _, inputs = policy.observation_tensors(obs)
    cameras = len(policy.config.image_keys)
    return inputs[0], inputs[1:1 + cameras], inputs[1 + cameras:]


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Each map (B, H, W) scaled to 0..1 by its own maximum (all-zero maps stay zero)."""
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peak > 0, peak, 1.0)[:, None, None]


def gradcam(policy: ImagePolicy, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Grad-CAM maps for a batch of observations: image key -> (B, H, W) float32 in 0..1."""
    feature_maps: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        output.retain_grad()
        feature_maps.append(output)

    handle = last_feature_map(policy).register_forward_hook(keep)  # fires once per camera (shared encoder)
    policy.eval()
    try:
        with torch.enable_grad():
            state, images, categories = _tensors(policy, obs)
            actions = policy(state, *images, *categories)
            policy.zero_grad(set_to_none=True)
            (0.5 * actions.pow(2).sum()).backward()
    finally:
        handle.remove()
    out = {}
    for key, image, fmap in zip(policy.config.image_keys, images, feature_maps):
        if fmap.grad is None:
            raise ImitlabError("the policy's feature map got no gradient; is its encoder frozen without gradients?")
        weights = fmap.grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * fmap).sum(dim=1)).detach().float().numpy()
        size = image.shape[1:3]
        out[key] = _normalise(np.stack([cv2.resize(c, size[::-1], interpolation=cv2.INTER_LINEAR) for c in cam]))
    return out


def occlusion(policy: ImagePolicy, obs: dict[str, np.ndarray], patch: int = 0,
              stride: int = 0) -> dict[str, np.ndarray]:
    """Occlusion maps for a batch of observations (patch and stride default to 1/6 and 1/12 of the image side)."""
    state, images, categories = _tensors(policy, obs)
    out = {}
    with torch.no_grad():
        policy.eval()
        base = policy(state, *images, *categories)
        for index, key in enumerate(policy.config.image_keys):
            side = images[index].shape[1]
            size = patch or max(2, side // 6)
            step = stride or max(1, side // 12)
            corners = [(y, x) for y in range(0, side - size + 1, step) for x in range(0, side - size + 1, step)]
            maps = np.zeros((len(base), side, side), np.float32)
            cover = np.zeros((side, side), np.float32)
            for y, x in corners:
                cover[y:y + size, x:x + size] += 1
            for b in range(len(base)):
                occluded = images[index][b:b + 1].repeat(len(corners), 1, 1, 1).clone()
                for n, (y, x) in enumerate(corners):
                    occluded[n, y:y + size, x:x + size] = OCCLUSION_GREY
                batch = [im[b:b + 1].expand(len(corners), *im.shape[1:]) for im in images]
                batch[index] = occluded
                repeated = [c[b:b + 1].expand(len(corners)) for c in categories]
                moved = (policy(state[b:b + 1].expand(len(corners), -1), *batch, *repeated)
                         - base[b]).norm(dim=1).numpy()
                for n, (y, x) in enumerate(corners):
                    maps[b, y:y + size, x:x + size] += moved[n]
            out[key] = _normalise(maps / np.maximum(cover, 1.0))
    return out


def attribution(policy: ImagePolicy, obs: dict[str, np.ndarray], method: str) -> dict[str, np.ndarray]:
    """Maps of ``method`` (one of ``METHODS``) for a batch of observations."""
    if method == "gradcam":
        return gradcam(policy, obs)
    if method == "occlusion":
        return occlusion(policy, obs)
    raise ImitlabError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")


def randomized_copy(policy: ImagePolicy, seed: int) -> ImagePolicy:
    """The same architecture with freshly initialised weights (Adebayo's model-randomisation test)."""
    torch.manual_seed(seed)
    fresh = ImagePolicy(policy.config, load_pretrained=False)
    fresh.eval()
    return fresh


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Spearman rank correlation of paired maps (B, H, W); constant maps count as uncorrelated."""
    values = []
    for x, y in zip(a.reshape(len(a), -1), b.reshape(len(b), -1)):
        rho = spearmanr(x, y).statistic if np.ptp(x) > 0 and np.ptp(y) > 0 else 0.0
        values.append(0.0 if np.isnan(rho) else float(rho))
    return float(np.mean(values))


def randomization_check(policy: ImagePolicy, obs: dict[str, np.ndarray], method: str,
                        seeds: Sequence[int] = (1, 2, 3, 4, 5)) -> dict[str, float]:
    """Per camera, the rank correlation of the maps from the trained weights and from random ones on the same
    frames, averaged over one re-initialisation per seed (not 0: training initialises from its seed, 0 by default).

    A saliency method that reflects what the policy learned gives maps that change when the weights do (low
    correlation); one that only reflects the input or the architecture (edge detectors) does not.
    """
    trained = attribution(policy, obs, method)
    scores: dict[str, list[float]] = {key: [] for key in trained}
    for seed in seeds:
        random = attribution(randomized_copy(policy, seed), obs, method)
        for key in trained:
            scores[key].append(rank_correlation(trained[key], random[key]))
    return {key: float(np.mean(values)) for key, values in scores.items()}


def overlay(image: np.ndarray, heat: np.ndarray, size: int) -> np.ndarray:
    """``image`` (H, W, 3 uint8 RGB) upscaled to ``size`` with the heat map (H, W in 0..1) blended over it."""
    big = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
    colour = cv2.applyColorMap(np.uint8(255 * cv2.resize(heat, (size, size))), cv2.COLORMAP_JET)[..., ::-1]
    return cv2.addWeighted(big, 0.55, colour, 0.45, 0.0)


@dataclass
class ExplainedEpisode:
    """One rollout filmed with its saliency maps."""

    seed: int
    success: bool
    length: int
    video: str
    frame: str
    """A PNG of the frame in the middle of the episode (for documents)."""


def explain(run: str | Path, seeds: Sequence[int], out_dir: Path, method: str = "gradcam",
            env_kwargs: dict[str, Any] | None = None, sanity_frames: int = 16,
            progress: bool = True) -> dict[str, Any]:
    """Roll the policy out on ``seeds``, film each episode with its attribution maps, and run the randomisation
    check on up to ``sanity_frames`` frames of the first episode. Writes ``explain.json`` into ``out_dir``."""
    if method not in METHODS:
        raise ImitlabError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    path = policy_dir(Path(run))
    policy, metadata = load_policy(path)
    if policy.config.history > 1:
        raise ImitlabError(f"{path} sees {policy.config.history} frames per camera; explain maps one frame's "
                           "pixels and supports single-frame policies only")
    overlap = sorted(set(seeds) & set(metadata.get("train_seeds", [])))
    if overlap:
        raise ImitlabError(f"seeds overlap the policy's demonstration seeds (e.g. {overlap[:5]}); use held-out "
                           f"seeds (from {HELD_OUT_SEED_START})")
    env_id = metadata["env_id"]
    env = make_env(env_id, render_mode="rgb_array", **{**metadata.get("env_kwargs", {}), **(env_kwargs or {})})
    labels = action_labels(env_id, policy.config.action_dim)
    keys = policy.config.image_keys
    episodes: list[ExplainedEpisode] = []
    first_frames: list[dict[str, np.ndarray]] = []
    try:
        for seed in tqdm(seeds, desc=f"explain ({method})", unit="ep", disable=not progress):
            obs, _ = env.reset(seed=int(seed))
            frames, done, info = [], False, {}
            while not done:
                batch = {k: np.asarray(v)[None] for k, v in obs.items()}  # a Discrete key is a Python int
                heat = attribution(policy, batch, method)
                action = policy.predict(obs)
                if not episodes and len(first_frames) < sanity_frames:
                    first_frames.append(batch)
                view = env.render()
                main = overlay(obs[keys[0]], heat[keys[0]][0], view.shape[0])
                others = [overlay(obs[k], heat[k][0], obs[k].shape[0]) for k in keys[1:]]
                frames.append(annotate_frame(np.concatenate([view, main], axis=1), others, action, labels,
                                             f"seed {seed}  step {len(frames)}  {method}"))
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
            success = bool(info.get("is_success", False))
            name = f"seed_{seed}_{'success' if success else 'failure'}"
            video = write_mp4(out_dir / f"{name}.mp4", frames, env.metadata.get("render_fps", 10))
            still = out_dir / f"{name}.png"
            cv2.imwrite(str(still), frames[len(frames) // 2][..., ::-1])
            episodes.append(ExplainedEpisode(int(seed), success, len(frames), str(video), str(still)))
    finally:
        env.close()
    sanity_obs = {k: np.concatenate([f[k] for f in first_frames]) for k in first_frames[0]}
    report = {
        "policy": str(path), "env_id": env_id, "method": method,
        "episodes": [e.__dict__ for e in episodes],
        "randomization_check": {
            "frames": len(first_frames),
            "rank_correlation": randomization_check(policy, sanity_obs, method),
            "meaning": "Spearman correlation of the maps from the trained and from random weights on the same "
                       "frames; near 0: the maps depend on what the policy learned (Adebayo et al. 2018)",
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "explain.json").write_text(json.dumps(report, indent=2))
    return report
