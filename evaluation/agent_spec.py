"""What evaluation runs: an :class:`AgentSpec` (how a worker builds the agent, which env, which seeds it trained
on), and the specs evaluation can make itself, the expert's and a saved torch policy's. Names (``expert``, a run
folder, a bundle) are resolved above evaluation, in ``imitlab.agents``; a bundle's spec comes from deploy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from imitlab.core.action_execution import ActOptions, Execution
from imitlab.core.errors import ImitlabError
from imitlab.evaluation.rollout import Agent, ExpertAgent, policy_agent

EXPERT = "expert"
POLICY = "policy"


@dataclass
class AgentSpec:
    """A resolved agent (``imitlab.agents.resolve_agent`` turns a name into one): how a worker process builds it,
    the env it acts in, the seeds it was trained on (evaluation refuses them) and its provenance."""

    kind: str
    """``expert``, ``policy`` or ``bundle``."""
    label: str
    """How reports name the agent."""
    build: Callable[[], Agent]
    """Makes the agent (inside a worker process): a module-level function or a ``functools.partial`` of one, so
    it pickles."""
    env_id: str
    env_kwargs: dict[str, Any]
    path: Path | None = None
    train_seeds: list[int] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    """A policy's ``policy.json`` metadata or a bundle's spec (training config, dataset) for the report."""


def expert_spec(env_id: str, env_kwargs: dict[str, Any] | None = None) -> AgentSpec:
    """The task's privileged expert in ``env_id`` configured by ``env_kwargs``."""
    return AgentSpec(EXPERT, EXPERT, ExpertAgent, env_id, dict(env_kwargs or {}))


def policy_spec(path: Path, label: str | None = None, env_id: str | None = None,
                env_kwargs: dict[str, Any] | None = None, device: str = "cpu",
                options: ActOptions = ActOptions()) -> AgentSpec:
    """A saved torch policy folder; ``env_id`` (if given) must be the one it was trained on, ``env_kwargs``
    override its env's; ``device`` (``policies/device.py``) is where each worker runs it; ``options`` say how its
    head acts."""
    from imitlab.policies.io import load_policy

    policy, md = load_policy(path)  # fail here, with one line, rather than inside every worker
    execution = Execution.of(policy.config.to_dict(), options)
    spec_env = md.get("env_id")
    if spec_env is None:
        raise ImitlabError(f"{path / 'policy.json'} does not say which env the policy was trained on")
    if env_id is not None and env_id != spec_env:
        raise ImitlabError(f"policy {path} was trained on {spec_env}, not {env_id}")
    kwargs = {**md.get("env_kwargs", {}), **(env_kwargs or {})}
    return AgentSpec(POLICY, label or str(path), partial(_policy_agent, path, execution, device), spec_env, kwargs,
                     path, list(md.get("train_seeds", [])), md)


def _policy_agent(path: Path, execution: Execution, device: str = "cpu") -> Agent:
    """A saved torch policy as an agent (evaluation's workers set torch to one thread first)."""
    from imitlab.policies.device import resolve_device
    from imitlab.policies.io import load_policy

    policy, _ = load_policy(path)
    return policy_agent(policy.to(resolve_device(device)), execution)
