"""Validate before deploy: the gate that turns a trained policy into a deployment bundle, or refuses to.

``deploy`` exports the policy to ONNX, checks the export against torch, runs the exported model in closed
loop on held-out seeds, and writes the bundle only if the lower end of the 95 % Wilson interval of its success
rate reaches the bar. Everything is built in a temporary folder and renamed into place at the very end, so a
refusal (or a crash) leaves nothing behind. The gate judges the ONNX file that ships, not the torch model.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from imitlab.core.action_execution import head_outputs
from imitlab.core.errors import ImitlabError
from imitlab.core.observation_keys import is_image_sequence
from imitlab.core.permissions import apply_umask
from imitlab.core.seeds import DEMO_SEED_START, HELD_OUT_SEED_START
from imitlab.deploy.agent import bundle_agent_spec
from imitlab.deploy.export import INT8_MODES, export_onnx, parity_error, quantize_int8
from imitlab.deploy.latency import latency_ms
from imitlab.deploy.runtime import OnnxPolicy
from imitlab.deploy.spec import FORMAT, FORMAT_VERSION, INT8_MODEL_FILE, MODEL_FILE, SPEC_FILE, VALIDATION_DIR
from imitlab.envs import make_env, make_expert
from imitlab.evaluation.evaluate import EvalSummary, evaluate, write_report
from imitlab.evaluation.provenance import dataset_summary
from imitlab.evaluation.stats import wilson_interval

#: Largest |torch - ONNX| action difference accepted for the fp32 export (float32 kernels differ by ~1e-6).
PARITY_TOLERANCE = 1e-4
#: Expert episodes (training seeds 0..) whose observations feed the parity, int8-difference and latency checks.
PROBE_EPISODES = 3
#: Expert episodes on the seeds after the probe's whose frames (a few thousand) calibrate static int8.
CALIBRATION_EPISODES = 8
#: int8 ships only if no probe action moves more than this from the fp32 model's (actions are in [-1, 1]).
INT8_MAX_ACTION_DIFF = 0.02
_VERSIONED = ("imitlab", "torch", "onnx", "onnxruntime", "mujoco", "numpy", "gymnasium")


@dataclass
class DeployResult:
    """What ``deploy`` wrote and measured."""

    bundle: Path
    spec: dict[str, Any]


def deploy(run: Path, min_success: float, episodes: int = 50, out: Path | None = None, int8: bool = False,
           int8_mode: str = "static", workers: int | None = None, videos: int = 2, seed_start: int = HELD_OUT_SEED_START,
           progress: bool = True) -> DeployResult:
    """Validate the policy in ``run`` (a run or policy folder) and write a bundle to ``out`` if it clears ``min_success``.

    Raises ImitlabError, writing nothing, when the bar is not met, the export does not match torch, or ``out``
    exists. With ``int8``, an int8 model is built and validated the same way; it ships only if it clears the bar too.
    """
    from imitlab.policies.io import CONFIG_FILE, load_policy, policy_dir

    if not 0.0 <= min_success <= 1.0:
        raise ImitlabError(f"--min-success must be a fraction in [0, 1], got {min_success}")
    if int8_mode not in INT8_MODES:
        raise ImitlabError(f"unknown int8 mode {int8_mode!r}; choose one of {', '.join(INT8_MODES)}")
    source = policy_dir(Path(run))
    out = Path(out) if out is not None else Path(run) / "bundle"
    if out.exists():
        raise ImitlabError(f"{out} already exists; remove it or choose another --out")
    policy, md = load_policy(source)
    if not isinstance(md.get("env_id"), str) or not isinstance(md.get("env_kwargs", {}), dict):
        raise ImitlabError(f"{source / CONFIG_FILE}: its metadata has no env_id (or env_kwargs is not an object), "
                           "so the policy cannot be validated in closed loop")
    seeds = list(range(seed_start, seed_start + episodes))
    staging = Path(tempfile.mkdtemp(prefix="imitlab-bundle-"))
    try:
        probe = probe_observations(md["env_id"], md.get("env_kwargs", {}),
                                   ("state", *policy.config.image_keys, *policy.config.category_keys),
                                   history=policy.config.history)
        export_onnx(policy, staging / MODEL_FILE)
        spec = _spec(policy, md, source)
        spec["models"]["fp32"] = _file_entry(staging / MODEL_FILE)
        fp32 = OnnxPolicy(staging / MODEL_FILE, spec)
        parity = parity_error(policy, fp32, probe)
        if math.isnan(parity):
            raise ImitlabError("deploy refused: the policy gives non-finite (NaN or infinite) actions on expert "
                               "observations; nothing written")
        if not parity <= PARITY_TOLERANCE:
            raise ImitlabError(f"deploy refused: the ONNX export differs from the torch policy by {parity:.2e} "
                               f"(tolerance {PARITY_TOLERANCE:g}); nothing written")
        summary = evaluate(bundle_agent_spec(staging, spec, "fp32", f"{out} (fp32)", out), seeds, workers=workers,
                           video_dir=staging / VALIDATION_DIR / "videos", videos=videos, progress=progress)
        low, _ = wilson_interval(summary.successes, len(seeds))
        if low < min_success:
            raise ImitlabError(f"deploy refused: {_outcome(summary)} on held-out seeds {seeds[0]}..{seeds[-1]}; "
                               f"the lower end {100 * low:.1f} % is below --min-success {100 * min_success:.1f} %; "
                               "nothing written")
        write_report(summary, staging / VALIDATION_DIR)
        latency = {"torch": _torch_latency(policy, probe), "fp32": latency_ms(fp32.predict, probe)}
        validation: dict[str, Any] = {
            "min_success": min_success, "seeds": [seeds[0], seeds[-1]], "episodes": len(seeds),
            "parity_max_abs_diff": parity, "parity_tolerance": PARITY_TOLERANCE,
            "fp32": _result(summary, f"{VALIDATION_DIR}/report.html"),
        }
        if int8:
            validation["int8"] = _validate_int8(staging, spec, probe, seeds, min_success, int8_mode, workers, progress,
                                                policy, out, latency, summary)
        spec["validation"] = validation
        spec["latency_ms_batch1"] = latency
        _write_spec(staging, spec)
        (staging / "README.md").write_text(_readme(spec, out))
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return DeployResult(bundle=out, spec=spec)


def _validate_int8(staging: Path, spec: dict[str, Any], probe: dict[str, np.ndarray], seeds: list[int],
                   min_success: float, mode: str, workers: int | None, progress: bool, policy: Any, out: Path,
                   latency: dict[str, Any], fp32: EvalSummary) -> dict[str, Any]:
    """Quantise, then keep the file only if its actions stay within ``INT8_MAX_ACTION_DIFF`` of fp32's on the probe
    frames and, in closed loop on the same seeds, its success rate lies inside fp32's 95 % interval and clears the
    bar. ``reason`` says why fp32 was kept otherwise (rollouts are skipped when the actions already differ)."""
    calibration = None
    if mode == "static":
        calibration = probe_observations(spec["env_id"], spec.get("env_kwargs", {}), tuple(probe), limit=None,
                                         history=policy.config.history,
                                         first_episode=PROBE_EPISODES, episodes=CALIBRATION_EPISODES)
    path = quantize_int8(staging / MODEL_FILE, staging / INT8_MODEL_FILE, calibration, mode)
    model = OnnxPolicy(path, spec)
    reference = OnnxPolicy(staging / MODEL_FILE, spec)
    diff = parity_error(reference, model, probe)
    latency["int8"] = latency_ms(model.predict, probe)
    parity = parity_error(policy, model, probe)
    result: dict[str, Any] = {"scheme": mode, "max_abs_diff_allowed": INT8_MAX_ACTION_DIFF,
                              "max_abs_diff_vs_fp32": None if math.isnan(diff) else diff,
                              "max_abs_diff_vs_torch": None if math.isnan(parity) else parity,
                              "calibration_frames": 0 if calibration is None else len(calibration["state"])}
    if not diff <= INT8_MAX_ACTION_DIFF:  # NaN (a non-finite action) fails too
        result.update(included=False, reason=f"its actions differ from fp32's by up to {diff:.3f} on the probe "
                                             f"frames (> {INT8_MAX_ACTION_DIFF}); closed-loop check skipped")
        path.unlink()
        return result
    spec["models"]["int8"] = {**_file_entry(path), "scheme": mode}
    model_for_eval = bundle_agent_spec(staging, spec, "int8", f"{out} (int8)", out)
    summary = evaluate(model_for_eval, seeds, workers=workers, progress=progress)
    write_report(summary, staging / VALIDATION_DIR / "int8")
    n = len(seeds)
    low, _ = wilson_interval(summary.successes, n)
    fp32_low, fp32_high = wilson_interval(fp32.successes, n)
    changed = sorted(e.seed for e, f in zip(summary.episodes, fp32.episodes) if e.success != f.success)
    result.update(_result(summary, f"{VALIDATION_DIR}/int8/report.html"), seeds_changed=changed)
    if not fp32_low <= summary.successes / n <= fp32_high:
        result["reason"] = (f"{_outcome(summary)} lies outside fp32's interval {100 * fp32_low:.1f}-"
                            f"{100 * fp32_high:.1f} % ({len(changed)} seeds changed outcome)")
    elif low < min_success:
        result["reason"] = f"{_outcome(summary)} is below --min-success {100 * min_success:.1f} %"
    result["included"] = "reason" not in result
    if not result["included"]:
        del spec["models"]["int8"]
        path.unlink()
    return result


def probe_observations(env_id: str, env_kwargs: dict[str, Any], keys: tuple[str, ...], limit: int | None = 256,
                       first_episode: int = 0, episodes: int = PROBE_EPISODES, history: int = 1) -> dict[str, np.ndarray]:
    """Observations from expert episodes on training seeds: in-distribution inputs for calibration and checks;
    ``limit`` frames spread evenly over them (None: every frame); with a ``history`` > 1, each image with the frames
    before it in its episode (N, H, W, 3), as a policy with that history sees them."""
    from imitlab.demos.loader import episode_starts, frame_windows
    from imitlab.demos.recorder import collect_episode

    env = make_env(env_id, **env_kwargs)
    try:
        expert = make_expert(env)
        seeds = range(DEMO_SEED_START + first_episode, DEMO_SEED_START + first_episode + episodes)
        episodes_run = [collect_episode(env, expert.act, seed, on_reset=expert.reset) for seed in seeds]
    finally:
        env.close()
    obs = {k: np.concatenate([e.obs[k] for e in episodes_run]) for k in keys}
    n = len(obs["state"])
    rows = np.linspace(0, n - 1, n if limit is None else min(limit, n)).astype(int)
    frames = frame_windows(episode_starts([len(e.obs["state"]) for e in episodes_run]), rows, history)
    return {k: np.ascontiguousarray(v[frames] if history > 1 and is_image_sequence(v) else v[rows])
            for k, v in obs.items()}


def _spec(policy: Any, md: dict[str, Any], source: Path) -> dict[str, Any]:
    config = policy.config
    size = config.image_size
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_policy": str(source.resolve()),
        "env_id": md["env_id"], "env_kwargs": md.get("env_kwargs", {}),
        "camera": {
            "env_id": md["env_id"], "env_kwargs": md.get("env_kwargs", {}), "image_keys": list(config.image_keys),
            "image_size": size,
            "note": "images must come from this env configuration (camera pose, field of view, size, lighting); "
                    "the policy never saw any other",
        },
        "image_keys": list(config.image_keys), "image_size": size,
        "state_dim": config.state_dim, "action_dim": config.action_dim,
        "categories": [{"key": c.key, "n": c.n, "start": c.start} for c in config.categories],
        "observation_space": md.get("observation_space"), "action_space": md.get("action_space"),
        "inputs": [{"name": "state", "dtype": "float32", "shape": ["batch", config.state_dim]}]
        + [{"name": key, "dtype": "uint8", "shape": ["batch", *_frames(config), size, size, 3],
            "layout": "NHWC RGB" if config.history == 1 else "N frames (oldest first) of NHWC RGB"}
           for key in config.image_keys]
        + [{"name": c.key, "dtype": "int64", "shape": ["batch"], "values": [c.start, c.start + c.n - 1]}
           for c in config.categories],
        "outputs": _outputs(config),
        "normalisation": {
            "in_graph": True,
            "note": "ImagePolicy.forward normalises inside the ONNX graph: feed raw env observations",
            "state": "(state - state_mean) / state_std",
            "state_mean": config.state_mean, "state_std": config.state_std,
            "image": f"(pixel - {policy.encoder.mean:g}) / {policy.encoder.std:g} ({config.backbone} backbone)",
        },
        "policy_config": config.to_dict(),
        "train_config": md.get("train_config"),
        "train_seeds": md.get("train_seeds", []),
        "dataset_summary": dataset_summary(md.get("dataset")),
        "models": {},
        "versions": _versions(),
    }


def _frames(config: Any) -> list[int]:
    """The frame axis of the image inputs: none for a single frame, N for a history of N."""
    return [config.history] if config.history > 1 else []


def _outputs(config: Any) -> list[dict[str, Any]]:
    """The model's outputs: ``action`` first, then the rest of its head's (``head_outputs``)."""
    a, k, h = config.action_dim, config.gmm_modes, config.chunk_size
    described: dict[str, dict[str, Any]] = {
        "action": {"shape": ["batch", a], "range": [-1, 1], "meaning": "the action now, without episode state"},
        "gmm_logits": {"shape": ["batch", k], "meaning": "mixture weights (logits) of the modes"},
        "gmm_means": {"shape": ["batch", k, a], "range": [-1, 1], "meaning": "each mode's mean action"},
        "gmm_stds": {"shape": ["batch", k, a], "meaning": "each mode's standard deviation"},
        "action_chunk": {"shape": ["batch", h, a], "range": [-1, 1], "meaning": "the next H actions"},
        "chunk_logits": {"shape": ["batch", config.chunk_modes], "meaning": "likelihood (logits) of each proposal"},
        "chunk_proposals": {"shape": ["batch", config.chunk_modes, h, a], "range": [-1, 1],
                            "meaning": "each proposal's next H actions (action_chunk is the likeliest)"},
    }
    return [{"name": name, "dtype": "float32", **described[name]} for name in head_outputs(config.to_dict())]


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _file_entry(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _write_spec(folder: Path, spec: dict[str, Any]) -> None:
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")


def _outcome(summary: EvalSummary) -> str:
    """The gate's view: an error episode (crash, timeout, unstable simulation...) weighs as a failure, with why."""
    n = len(summary.episodes)
    low, high = wilson_interval(summary.successes, n)
    errors = summary.error_lines()
    shown = "; ".join(errors[:3]) + ("; ..." if len(errors) > 3 else "")
    return (f"success {summary.successes}/{n} = {100 * summary.successes / n:.1f} % "
            f"(95 % Wilson {100 * low:.1f}-{100 * high:.1f} %)"
            + (f", counting {len(errors)} errors as failures ({shown})" if errors else ""))


def _result(summary: EvalSummary, report: str) -> dict[str, Any]:
    data = summary.to_json()
    keys = ("successes", "episodes", "success_rate", "success_ci95", "mean_return", "mean_length", "metrics",
            "terminated_episodes", "inference_ms_per_step")
    n = len(summary.episodes)  # the gate counts an error as a failure
    gate = {"success_rate": summary.successes / n, "success_ci95": list(wilson_interval(summary.successes, n)),
            "errors": data["errors"], "error_episodes": data["error_episodes"]}
    return {**{k: data[k] for k in keys}, **gate,
            "per_seed_success": {str(e.seed): e.success for e in summary.episodes}, "report": report}


def _torch_latency(policy: Any, probe: dict[str, np.ndarray]) -> dict[str, float]:
    """The torch policy's batch-1 latency with one thread, for comparison with the ONNX runtime."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return latency_ms(policy.predict, probe)
    finally:
        torch.set_num_threads(threads)


def _publish(staging: Path, out: Path) -> None:
    """Copy the finished bundle beside ``out`` and rename it into place (atomic on one filesystem)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.copytree(staging, partial)
    apply_umask(partial)  # the staging folder is mkdtemp's 0700, which copytree keeps
    try:
        os.rename(partial, out)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise ImitlabError(f"cannot publish the bundle to {out} ({error.strerror or error})") from error


def _readme(spec: dict[str, Any], out: Path) -> str:
    v = spec["validation"]
    lat = spec["latency_ms_batch1"]
    rows = [("fp32", v["fp32"], lat["fp32"])]
    int8 = v.get("int8", {})
    if "success_ci95" in int8:  # it was rolled out (its actions were close enough to fp32's)
        rows.append((f"int8 ({int8['scheme']}{'' if int8['included'] else ', NOT included'})", int8,
                     lat.get("int8", {})))
    int8_note = ""
    if int8:
        diff = int8["max_abs_diff_vs_fp32"]
        int8_note = (f"\nint8 ({int8['scheme']}): largest action difference from fp32 "
                     + ("non-finite" if diff is None else f"{diff:.3f}") + f" (allowed {int8['max_abs_diff_allowed']}); "
                     + ("included." if int8["included"] else f"not included: {int8['reason']}.") + "\n")
    table = "\n".join(
        f"| {name} | {r['successes']}/{r['episodes']} = {100 * r['success_rate']:.1f} % | "
        f"{100 * r['success_ci95'][0]:.1f}-{100 * r['success_ci95'][1]:.1f} % | {r['mean_return']:.2f} | "
        f"{lt.get('median_ms', float('nan')):.2f} |" for name, r, lt in rows)
    keys = ", ".join(f"`{k}`" for k in spec["image_keys"])
    categories = "".join(f", int64 (B,) `{c['key']}` ({c['start']}..{c['start'] + c['n'] - 1})"
                         for c in spec.get("categories", []))
    return f"""# Deployment bundle

Policy `{spec['source_policy']}` for `{spec['env_id']}` (env kwargs `{json.dumps(spec['env_kwargs'])}`),
validated in closed loop on held-out seeds {v['seeds'][0]}..{v['seeds'][1]} before it was written.
Gate: the lower end of the 95 % Wilson interval of the success rate must reach {100 * v['min_success']:.1f} %.
Torch vs ONNX (fp32) max action difference on expert observations: {v['parity_max_abs_diff']:.2e}.

| model | success | 95 % Wilson | mean return | latency batch 1 (median ms) |
|---|---|---|---|---|
{table}
{int8_note}
Torch eager latency for reference: {lat['torch']['median_ms']:.2f} ms. Full reports: `validation/report.html`.

## Use

Inputs: `state` float32 (B, {spec['state_dim']}) and uint8 (B, {spec['image_size']}, {spec['image_size']}, 3) RGB
images {keys}{categories}; output `action` float32 (B, {spec['action_dim']}) in [-1, 1]. Normalisation is inside
the graph: feed raw observations. Camera settings = the env above.

In Python, with onnxruntime and numpy only (no torch):

    from imitlab.deploy.runtime import load_bundle
    policy = load_bundle("{out}")
    action = policy.predict(obs)  # obs: dict with "state", the image and category keys, single or batched

Over HTTP (POST /act, GET /health, GET /spec), and re-validation on held-out seeds:

    imitlab serve {out} --port 8000
    imitlab eval {out}
"""
