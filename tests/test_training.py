"""The BC trainer: both loader modes train end to end on the same split and statistics; keypoint policies
fine-tune above frozen, cached blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imitlab.core.errors import ImitlabError
from imitlab.demos.dataset import DemoDataset
from imitlab.demos.recorder import record
from imitlab.demos.synthetic import synthetic_episode, synthetic_writer
from imitlab.policies import ImagePolicy, load_policy, state_statistics
from imitlab.training.augment import random_shift
from imitlab.training.bc import TrainConfig, train

#: A budget far below the tiny demos' decoded size (~1 MiB): the loader must stream them.
TINY_BUDGET_MB = 0.05


def _train(tiny_demos: Path, out: Path, **overrides) -> dict:
    config = dict(dataset=str(tiny_demos), out=str(out), backbone="nature_cnn", pretrained=False, epochs=1,
                  eval_episodes=1, val_fraction=0.25, progress=False, threads=1)
    return train(TrainConfig(**{**config, **overrides}))


def test_chunked_training_streams_and_saves_a_valid_checkpoint(tiny_demos, tmp_path, capsys):
    log = _train(tiny_demos, tmp_path / "run", loader_mode="chunked", memory_budget_mb=TINY_BUDGET_MB, epochs=2)
    printed = capsys.readouterr().out
    assert "demo loader: 4 episodes" in printed and "streamed in chunks" in printed
    episodes = list(DemoDataset(tiny_demos).episodes())
    assert log["train_samples"] + log["val_samples"] == sum(len(e) for e in episodes)
    assert all(np.isfinite(e["train_loss"]) and np.isfinite(e["val_loss"]) for e in log["epochs"])

    policy, metadata = load_policy(tmp_path / "run" / "best")
    assert metadata["train_seeds"] == [0, 1, 2, 3] and metadata["train_config"]["loader_mode"] == "chunked"
    action = policy.predict({key: frames[0] for key, frames in episodes[0].obs.items()})
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)
    # Normalisation comes from the three training episodes only, never from the held-out one.
    without = [state_statistics(np.concatenate([e.obs["state"] for j, e in enumerate(episodes) if j != i]))
               for i in range(len(episodes))]
    assert any(policy.config.state_mean == pytest.approx(mean) and policy.config.state_std == pytest.approx(std)
               for mean, std in without)


def test_memory_and_chunked_training_learn_the_same_from_the_same_data(tiny_demos, tmp_path, capsys):
    """The mode changes how demos are held, not what is learnt: with a frozen backbone (no augmentation; head
    minibatches drawn from the trainer's seeded rng) the losses match to the bit. (Fine-tuning: memory mode
    in the ``tiny_run`` fixture, chunked mode above.)"""
    logs, configs = {}, {}
    for mode in ("memory", "chunked"):
        logs[mode] = _train(tiny_demos, tmp_path / mode, loader_mode=mode, memory_budget_mb=TINY_BUDGET_MB,
                            freeze_backbone=True)
        configs[mode] = load_policy(tmp_path / mode / "best")[0].config
    printed = capsys.readouterr().out
    assert "cached in memory" in printed and "streamed in chunks" in printed
    assert configs["memory"] == configs["chunked"]
    losses = {mode: [(e["train_loss"], e["val_loss"]) for e in log["epochs"]] for mode, log in logs.items()}
    assert losses["memory"] == losses["chunked"] and np.isfinite(losses["memory"]).all()
    assert logs["memory"]["train_samples"] == logs["chunked"]["train_samples"]


def test_same_seed_same_losses_while_streaming(tiny_demos, tmp_path):
    """Fine-tuning with augmentation, the chunk reader running in a thread: still identical run to run."""
    first, second = (_train(tiny_demos, tmp_path / name, loader_mode="chunked", memory_budget_mb=TINY_BUDGET_MB)
                     for name in ("a", "b"))
    assert [(e["train_loss"], e["val_loss"]) for e in first["epochs"]] == [
        (e["train_loss"], e["val_loss"]) for e in second["epochs"]]


def test_bf16_precision_trains_in_bf16_on_the_cpu_and_saves_fp32_weights(tiny_demos, tmp_path):
    """``precision="bf16"`` autocasts the forward pass on the CPU too (``auto`` does only on CUDA): the losses move
    off fp32's, stay finite, and the checkpoint holds fp32 weights that predict as any other."""
    logs = {p: _train(tiny_demos, tmp_path / p, precision=p, val_fraction=0.0) for p in ("auto", "bf16")}
    losses = {p: [loss for e in log["epochs"] for loss in e["step_losses"]] for p, log in logs.items()}
    assert np.isfinite(losses["bf16"]).all() and losses["bf16"] != losses["auto"]
    assert losses["bf16"][0] == pytest.approx(losses["auto"][0], rel=0.05)  # the same step, rounded differently
    policy, _ = load_policy(tmp_path / "bf16" / "best")
    assert {p.dtype for p in policy.parameters()} == {torch.float32}
    with pytest.raises(ImitlabError, match="precision: must be one of auto, fp32, bf16, got 'fp16'"):
        TrainConfig(dataset="d", out="o", precision="fp16")


def test_compiled_training_follows_the_eager_loss_curve(tiny_demos, tmp_path):
    """``compile=True`` runs the same step through inductor: the same losses to float tolerance, same checkpoint."""
    logs = {c: _train(tiny_demos, tmp_path / str(c), compile=c, val_fraction=0.0, epochs=2) for c in (False, True)}
    losses = {c: [loss for e in log["epochs"] for loss in e["step_losses"]] for c, log in logs.items()}
    assert len(losses[True]) == len(losses[False]) > 1
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
    assert load_policy(tmp_path / "True" / "best")[0].config == load_policy(tmp_path / "False" / "best")[0].config
    with pytest.raises(ImitlabError, match="--compile compiles the training step in one process"):
        _train(tiny_demos, tmp_path / "ddp", compile=True, nproc=2)


def test_no_usable_episodes_is_one_clear_error(tmp_path):
    writer = synthetic_writer(tmp_path / "failed", image_size=16)
    writer.append(synthetic_episode(0, image_size=16, success=False))
    with pytest.raises(ImitlabError, match="has no successful episodes"):
        train(TrainConfig(dataset=str(tmp_path / "failed"), out=str(tmp_path / "run"), progress=False))


@pytest.fixture(scope="module")
def two_camera_reach(tmp_path_factory) -> Path:
    """Three expert Reach episodes seen by the agent-view and the wrist camera at 48 px."""
    path = tmp_path_factory.mktemp("reach") / "demos"
    record("imitlab/Reach-v0", path, episodes=3, noise_std=0.0, progress=False,
           env_kwargs={"image_size": 48, "cameras": ["agentview", "wrist"]})
    return path


def test_keypoint_policy_fine_tunes_above_frozen_blocks_that_keep_their_imagenet_weights(two_camera_reach, tmp_path,
                                                                                         capsys):
    log = _train(two_camera_reach, tmp_path / "run", backbone="lite0", pretrained=True, pooling="spatial_softmax",
                 keypoints=8, freeze_blocks=6, freeze_batchnorm=True, epochs=2, val_fraction=0.0)
    printed = capsys.readouterr().out
    assert "no random-shift augmentation" in printed and "frozen features:" in printed
    assert all(np.isfinite(e["train_loss"]) for e in log["epochs"])

    policy, metadata = load_policy(tmp_path / "run" / "last")
    assert policy.config.pooling == "spatial_softmax" and policy.config.image_keys == ("image", "wrist_image")
    assert metadata["train_config"]["freeze_blocks"] == 6
    fresh = ImagePolicy(policy.config)  # ImageNet weights, untrained keypoints and head
    trained, initial = policy.encoder.state_dict(), fresh.encoder.state_dict()
    frozen = [k for k in trained if k.startswith("stem.") or k.startswith(tuple(f"blocks.{i}." for i in range(5)))]
    tuned = [k for k in trained if k.startswith("blocks.10.") and k.endswith("weight")]
    assert frozen and all(torch.equal(trained[k], initial[k]) for k in frozen)
    assert tuned and not any(torch.equal(trained[k], initial[k]) for k in tuned)
    statistics = [k for k in trained if k.startswith("blocks.10.") and k.endswith(("running_mean", "running_var"))]
    assert statistics and all(torch.equal(trained[k], initial[k]) for k in statistics)  # freeze_batchnorm
    episode = next(DemoDataset(two_camera_reach).episodes())
    action = policy.predict({key: frames[0] for key, frames in episode.obs.items()})
    assert action.shape == (4,) and np.all(np.abs(action) <= 1)


def test_a_frozen_backbone_cannot_train_new_keypoints(two_camera_reach, tmp_path):
    with pytest.raises(ImitlabError, match="freeze_blocks instead"):
        _train(two_camera_reach, tmp_path / "run", backbone="lite0", pooling="spatial_softmax", freeze_backbone=True)


def test_weight_average_is_what_validation_and_checkpoints_see(tiny_demos, tmp_path):
    """The average never changes the raw training trajectory; it replaces the weights that are validated and saved.
    With a decay of ~0 the average is the current weights, so everything matches the run without it."""
    raw = _train(tiny_demos, tmp_path / "raw", epochs=2)
    near_zero = _train(tiny_demos, tmp_path / "near_zero", epochs=2, ema_decay=1e-12)
    averaged = _train(tiny_demos, tmp_path / "averaged", epochs=2, ema_decay=0.9)

    def losses(log: dict, key: str) -> list[float]:
        return [e[key] for e in log["epochs"]]

    assert losses(averaged, "train_loss") == losses(raw, "train_loss") == losses(near_zero, "train_loss")
    assert losses(near_zero, "val_loss") == pytest.approx(losses(raw, "val_loss"), rel=1e-5)
    assert losses(averaged, "val_loss") != pytest.approx(losses(raw, "val_loss"), rel=1e-3)
    weights = {name: load_policy(tmp_path / name / "last")[0].state_dict() for name in ("raw", "near_zero", "averaged")}
    gap = {name: max((w[k].float() - v.float()).abs().max().item() for k, v in weights["raw"].items())
           for name, w in weights.items()}
    assert gap["near_zero"] < 1e-7 and gap["averaged"] > 1e-5  # the cosine schedule ends at a tiny learning rate


def test_random_shift_is_replicate_pad_and_crop() -> None:
    images = torch.randint(0, 256, (16, 20, 24, 3), dtype=torch.uint8)
    shifted = random_shift(images, 4, torch.Generator().manual_seed(3))
    # Reference: pad by replicating the edges, then crop each image at the same offsets the generator draws.
    generator = torch.Generator().manual_seed(3)
    dy, dx = (torch.randint(0, 9, (16,), generator=generator) for _ in range(2))
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2).float(), (4, 4, 4, 4), mode="replicate")
    for i in range(16):
        crop = padded[i, :, dy[i]:dy[i] + 20, dx[i]:dx[i] + 24].permute(1, 2, 0).to(torch.uint8)
        assert torch.equal(shifted[i], crop)
    assert shifted.dtype == torch.uint8 and not torch.equal(shifted, images)
    assert random_shift(images, 0, generator) is images


def test_log_reports_validation_time_against_wall_time(tiny_run) -> None:
    import json

    log = json.loads((tiny_run / "train_log.json").read_text())
    rollouts = [entry["rollout_seconds"] for entry in log["epochs"] if "rollout" in entry]
    assert rollouts and all(seconds > 0 for seconds in rollouts)
    assert log["validation_seconds"] == sum(rollouts) < log["seconds"]
