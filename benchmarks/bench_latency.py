"""Per-step policy latency at batch 1: torch eager vs the ONNX bundle runtime (fp32 and int8), per backbone.

A robot's control loop waits for one action per step, so batch-1 latency is what matters on the device.
Inputs are real LaneFollow observations (expert episodes); the static int8 model is calibrated on the frames
of the expert episodes that follow them, as ``imitlab deploy --int8`` does. The action differences are measured
against torch and against the fp32 ONNX model (what the deploy gate's 0.02 applies to). torch and onnxruntime both
get ``--threads`` intra-op threads.

    python benchmarks/bench_latency.py [--size 96] [--threads 1] [--repeats 300]

Numbers depend on what else runs on the machine; compare them on an idle one.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from imitlab.deploy.bundle import CALIBRATION_EPISODES, PROBE_EPISODES, probe_observations
from imitlab.deploy.export import export_onnx, parity_error, quantize_int8
from imitlab.deploy.latency import latency_ms
from imitlab.deploy.runtime import OnnxPolicy
from imitlab.policies import ImagePolicy, PolicyConfig

ENV_ID = "imitlab/LaneFollow-v0"


def bench(backbone: str, observations: dict[str, np.ndarray], calibration: dict[str, np.ndarray], threads: int,
          repeats: int) -> list[tuple[str, dict, float, float]]:
    """(variant, latency, max |action - torch's|, max |action - fp32 ONNX's|) for torch, ONNX fp32, int8 static and
    dynamic."""
    size = observations["image"].shape[1]
    torch.manual_seed(0)
    policy = ImagePolicy(PolicyConfig(backbone=backbone, image_size=size, pretrained=backbone == "lite0",
                                      state_dim=observations["state"].shape[1], action_dim=2)).eval()
    spec = {"image_keys": ["image"], "image_size": size, "state_dim": observations["state"].shape[1], "action_dim": 2}
    rows = [("torch eager", latency_ms(policy.predict, observations, repeats), 0.0, float("nan"))]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(policy, Path(tmp) / "model.onnx")
        variants = {"onnx fp32": fp32,
                    "onnx int8 static": quantize_int8(fp32, Path(tmp) / "static.onnx", calibration, "static"),
                    "onnx int8 dynamic": quantize_int8(fp32, Path(tmp) / "dynamic.onnx", None, "dynamic")}
        reference = OnnxPolicy(fp32, spec, threads=threads)
        for name, path in variants.items():
            model = OnnxPolicy(path, spec, threads=threads)
            latency = latency_ms(model.predict, observations, repeats)
            rows.append((name, latency, parity_error(policy, model, observations),
                         parity_error(reference, model, observations)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="camera image size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--backbones", nargs="+", default=["lite0", "nature_cnn"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kwargs = {"image_size": args.size}
    observations = probe_observations(ENV_ID, kwargs, ("state", "image"), limit=128)
    calibration = probe_observations(ENV_ID, kwargs, ("state", "image"), limit=None, first_episode=PROBE_EPISODES,
                                     episodes=CALIBRATION_EPISODES)
    print(f"batch 1, {args.size}x{args.size} image, {args.threads} thread(s), {args.repeats} calls each; "
          f"static int8 calibrated on {len(calibration['state'])} frames")
    print(f"{'backbone':<11} {'variant':<18} {'median ms':>9} {'p90 ms':>8} {'max |diff| vs torch':>20} {'vs fp32':>9}")
    for backbone in args.backbones:
        for name, latency, diff, diff_fp32 in bench(backbone, observations, calibration, args.threads, args.repeats):
            print(f"{backbone:<11} {name:<18} {latency['median_ms']:>9.3f} {latency['p90_ms']:>8.3f} {diff:>20.2e} "
                  f"{diff_fp32:>9.4f}")


if __name__ == "__main__":
    main()
