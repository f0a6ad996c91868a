"""What to run, by name: ``expert``, a policy or training-run folder, a deployment bundle or one of its ONNX files.

Resolution sits above both evaluation and deploy: evaluation runs an :class:`AgentSpec` without knowing what a
bundle is, and the deploy gate builds its spec in memory (``imitlab.deploy.agent``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imitlab.core.action_execution import ActOptions
from imitlab.core.errors import ImitlabError
from imitlab.deploy.agent import bundle_agent_spec
from imitlab.deploy.spec import MODEL_FILES, is_bundle, read_model, read_spec
from imitlab.evaluation.agent_spec import EXPERT, AgentSpec, expert_spec, policy_spec
from imitlab.policies.io import policy_dir


def resolve_agent(agent: str, env_id: str | None = None, env_kwargs: dict[str, Any] | None = None,
                  device: str = "cpu", options: ActOptions = ActOptions()) -> AgentSpec:
    """Turn ``expert``, a run/policy folder, a bundle folder or a bundle's ``.onnx`` file into an :class:`AgentSpec`.

    ``env_id`` is required for the expert and checked against a policy's or bundle's; ``env_kwargs`` override theirs;
    ``device`` is where a torch policy runs (``auto``, ``cpu``, ``cuda``); ``options`` say how a policy's head acts
    (chunk execution, sampling).
    """
    if agent == EXPERT:
        if env_id is None:
            raise ImitlabError("evaluating the expert needs --env")
        if options != ActOptions():
            raise ImitlabError("--chunk-exec and --sample choose how a policy's head acts; the expert has none")
        return expert_spec(env_id, env_kwargs)
    bundle = _resolve_bundle(Path(agent), options)
    if bundle is not None:
        if env_id is not None and env_id != bundle.env_id:
            raise ImitlabError(f"bundle {bundle.path} was validated on {bundle.env_id}, not {env_id}")
        bundle.env_kwargs.update(env_kwargs or {})
        return bundle
    return policy_spec(policy_dir(Path(agent)), str(agent), env_id, env_kwargs, device, options)


def resolve_pair(agent_a: str, agent_b: str, env_id: str | None = None) -> tuple[AgentSpec, AgentSpec]:
    """Two agents for a paired comparison: the expert, when one side is ``expert``, runs in the other side's env
    configuration (camera size etc.)."""
    env_kwargs: dict[str, Any] = {}
    learned = [agent for agent in (agent_a, agent_b) if agent != EXPERT]
    if learned:
        spec = resolve_agent(learned[0], env_id)
        env_id, env_kwargs = spec.env_id, spec.env_kwargs
    return resolve_agent(agent_a, env_id, env_kwargs), resolve_agent(agent_b, env_id, env_kwargs)


def resolve_agents(agents: dict[str, str], env_id: str | None = None,
                   env_kwargs: dict[str, Any] | None = None) -> dict[str, AgentSpec]:
    """Several agents (label -> name) in one env: the first one's (or ``env_id``), which all must share."""
    specs: dict[str, AgentSpec] = {}
    for label, agent in agents.items():
        spec = resolve_agent(agent, env_id, env_kwargs)
        env_id = env_id or spec.env_id
        if spec.env_id != env_id:
            raise ImitlabError(f"{agent} was trained on {spec.env_id}, the suite runs {env_id}")
        specs[label] = spec
    return specs


def _resolve_bundle(path: Path, options: ActOptions) -> AgentSpec | None:
    """A bundle folder (its fp32 model) or one of its model files (``BUNDLE/model.int8.onnx``); None otherwise."""
    folder, model = path, "fp32"
    if path.suffix == ".onnx" and is_bundle(path.parent):
        folder = path.parent
        model = next((name for name, file in MODEL_FILES.items() if file == path.name), "")
        if not model:
            raise ImitlabError(f"{path} is not one of the bundle's models ({', '.join(MODEL_FILES.values())})")
    if not is_bundle(folder):
        return None
    spec = read_spec(folder)
    read_model(folder, spec, model)  # a tampered or missing model is one line here, not an error in every worker
    return bundle_agent_spec(folder, spec, model, label=str(path), options=options)
