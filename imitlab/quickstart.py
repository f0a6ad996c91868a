"""The whole pipeline on the driving task, sized for 2 CPU cores: record -> train two policies -> evaluate both."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from imitlab.agents import resolve_agent
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.demos.dataset import HEADER
from imitlab.demos.recorder import record
from imitlab.evaluation.compare import comparison, comparison_markdown
from imitlab.evaluation.evaluate import evaluate, markdown_report, write_report
from imitlab.training.bc import TrainConfig, train


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
    lite0_epochs: int = 3
    """Fine-tuning epochs of the pretrained EfficientNet-Lite0 policy (~100 s each on 2 cores at 96 px)."""
    scratch_epochs: int = 8
    """Epochs of the scratch Nature-CNN baseline (much cheaper per sample; validated every other epoch)."""
    eval_episodes: int = 50
    """Held-out seeds for the final comparison."""
    videos: int = 4
    """mp4s per policy, of its best and worst held-out episodes."""
    train_overrides: dict = field(default_factory=dict)
    """Extra TrainConfig fields applied to both runs."""
    overwrite: bool = False
    """Retrain (and re-evaluate) runs already in ``out`` instead of refusing; recorded demos are kept."""


def run_quickstart(config: QuickstartConfig) -> Path:
    """Run the pipeline; returns the path of the comparison report."""
    start = time.perf_counter()
    out = config.out
    demos = out / "demos"
    if not (demos / HEADER).exists():
        record(config.env_id, demos, config.demo_episodes, noise_std=config.demo_noise, env_kwargs=config.env_kwargs)
    runs = {
        "lite0": TrainConfig(dataset=str(demos), out=str(out / "lite0"), backbone="lite0",
                             epochs=config.lite0_epochs, overwrite=config.overwrite, **config.train_overrides),
        "nature_cnn": TrainConfig(dataset=str(demos), out=str(out / "nature_cnn"), backbone="nature_cnn",
                                  pretrained=False, epochs=config.scratch_epochs, overwrite=config.overwrite,
                                  **{"eval_every": 2, **config.train_overrides}),
    }
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
