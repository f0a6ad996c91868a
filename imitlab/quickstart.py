"""The whole pipeline on the driving task, sized for 2 CPU cores: record -> train two policies -> evaluate both."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from imitlab.agents import resolve_agent
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.demos.dataset import HEADER
from imitlab.demos.recorder import record
from imitlab.evaluation.compare import comparison, comparison_markdown
from imitlab.evaluation.evaluate import evaluate, markdown_report, write_report
from imitlab.training.bc import TrainConfig, train
from imitlab.training.run_config import recipe_path, resolve_run_config


@dataclass
class QuickstartConfig:
    """Settings of ``imitlab quickstart`` (11 min 14 s from a fresh clone on 2 CPU cores, install included: README)."""

    out: Path = Path("runs/quickstart")
    """Everything goes here: ``demos/``, ``lite0/``, ``nature_cnn/``, ``report.md``."""
    env_id: str = "imitlab/LaneFollow-v0"
    """The task."""
    env_kwargs: dict = field(default_factory=dict)
    """Env constructor arguments (camera size, route length, ...)."""
    demo_episodes: int = 40
    """Expert episodes recorded (seeds 0..N-1)."""
    demo_noise: float = 0.2
    """DART noise on the executed action, so the demos show recoveries."""
    recipes: tuple[str, ...] = ("quickstart_lite0", "quickstart_nature_cnn")
    """Training recipes (``recipes/<name>.toml``), one policy each, named after the recipe's ``out`` folder: the
    pretrained Lite0 (3 epochs, ~100 s each on 2 cores at 96 px) and the scratch Nature-CNN baseline."""
    eval_episodes: int = 50
    """Held-out seeds for the final comparison."""
    videos: int = 4
    """mp4s per policy, of its best and worst held-out episodes."""
    train_overrides: dict = field(default_factory=dict)
    """TrainConfig fields that override every recipe's."""
    overwrite: bool = False
    """Retrain (and re-evaluate) runs already in ``out`` instead of refusing; recorded demos are kept."""


def run_quickstart(config: QuickstartConfig) -> Path:
    """Run the pipeline; returns the path of the comparison report."""
    start = time.perf_counter()
    out = config.out
    demos = out / "demos"
    if not (demos / HEADER).exists():
        record(config.env_id, demos, config.demo_episodes, noise_std=config.demo_noise, env_kwargs=config.env_kwargs)
    runs: dict[str, TrainConfig] = {}
    for recipe in config.recipes:
        train_config, _ = resolve_run_config(recipe_path(recipe), config.train_overrides)
        name = Path(train_config.out).name
        runs[name] = replace(train_config, dataset=str(demos), out=str(out / name), overwrite=config.overwrite)
    for name, train_config in runs.items():
        print(f"\n== training {name} ==")
        train(train_config)
    seeds = list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + config.eval_episodes))
    summaries = []
    for name in runs:
        print(f"\n== evaluating {name} on {len(seeds)} held-out seeds ==")
        summary = evaluate(resolve_agent(str(out / name)), seeds, video_dir=out / name / "eval" / "videos", videos=config.videos)
        write_report(summary, out / name / "eval")
        summaries.append(summary)
    paired = comparison(*summaries)
    report = out / "report.md"
    text = markdown_report(paired["reports"], base=out,
                           title="imitlab quickstart: LaneFollow, pretrained Lite0 vs scratch CNN")
    summary_table, _, per_episode = text.partition("\n## ")
    paired_section = comparison_markdown(paired).replace("# ", "## ", 1)
    report.write_text(f"{summary_table}\n{paired_section}\n## {per_episode}\nPlots and embedded videos: "
                      f"`{out}/<run>/eval/report.html`. Total time: {time.perf_counter() - start:.0f} s.\n")
    (out / "report.json").write_text(json.dumps(paired, indent=2))
    print(f"\n{summary_table}\n{paired_section}")
    return report
