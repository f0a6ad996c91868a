"""A bundle's ONNX model as an evaluation agent: how ``imitlab eval`` runs a bundle folder and how the deploy
gate runs the model it is about to ship, from the spec in memory before ``bundle.json`` is written."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from imitlab.core.action_execution import ActOptions, Execution
from imitlab.deploy.runtime import OnnxPolicy
from imitlab.deploy.spec import MODEL_FILES, read_model
from imitlab.evaluation.agent_spec import AgentSpec
from imitlab.evaluation.rollout import Agent, policy_agent


def bundle_agent_spec(folder: Path, spec: dict[str, Any], model: str = "fp32", label: str | None = None,
                      published: Path | None = None, options: ActOptions = ActOptions()) -> AgentSpec:
    """Evaluate variant ``model`` of the bundle in ``folder`` whose spec is ``spec``; reports name it ``label`` and,
    for a bundle still being built, its ``published`` folder; ``options`` say how its head acts. The model file is
    checked against the spec here, so a damaged one fails in one line before any worker starts."""
    read_model(folder, spec, model)
    execution = Execution.of(spec.get("policy_config") or {}, options)
    return AgentSpec("bundle", label or str(folder), partial(_onnx_agent, folder, spec, model, execution),
                     spec["env_id"], dict(spec["env_kwargs"]), published or folder, list(spec.get("train_seeds", [])),
                     {**spec, "model_file": MODEL_FILES[model]})


def _onnx_agent(folder: Path, spec: dict[str, Any], model: str, execution: Execution) -> Agent:
    """The verified ONNX model on onnxruntime with one thread (built in a worker process)."""
    path, content = read_model(folder, spec, model)
    return policy_agent(OnnxPolicy(path, spec, threads=1, content=content), execution)
