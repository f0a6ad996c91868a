"""``benchmarks/gpu_check.py --dry-run``: the GPU check's steps (train with --device, the CPU-loadable checkpoint,
CPU-vs-device actions, the throughput loop) run on the CPU, so the script a GPU machine runs is known to work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imitlab.core.errors import ImitlabError
from imitlab.policies.device import resolve_device

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_dry_run_passes_on_the_cpu():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith(("ok", "FAIL"))] == [
        "ok   device", "ok   train --device", "ok   Lite0 fine-tuning"]


def test_device_choices():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ImitlabError, match="unknown device 'tpu'"):
        resolve_device("tpu")
