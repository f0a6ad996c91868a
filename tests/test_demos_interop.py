"""robomimic HDF5 both ways (equal array for array) and imitation trajectories that BC trains on."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from imitlab.demos.dataset import DemoDataset
from imitlab.demos.interop import (export_robomimic, import_robomimic, imitation_observation_space,
                                   to_imitation_trajectories)
from imitlab.core.errors import ImitlabError
from imitlab.demos.synthetic import synthetic_episode, synthetic_writer


@pytest.fixture
def dataset(tmp_path) -> DemoDataset:
    writer = synthetic_writer(tmp_path / "ds", image_size=36)
    for seed in range(4):
        writer.append(synthetic_episode(seed, length=20 + seed, image_size=36, success=seed != 2))
    legacy = synthetic_episode(9, length=12, image_size=36)
    legacy.final_obs = None  # a file recorded before final observations were stored
    legacy.executed_actions = legacy.actions + 0.1
    writer.append(legacy)
    ds = DemoDataset(tmp_path / "ds")
    ds.write_masks({"train": ["demo_000000", "demo_000001", "demo_000004"], "valid": ["demo_000002", "demo_000003"]})
    return ds


def _assert_same_episodes(a: DemoDataset, b: DemoDataset) -> None:
    assert len(a) == len(b)
    for x, y in zip(a.episodes(), b.episodes()):
        assert x.obs.keys() == y.obs.keys()
        for key in x.obs:
            assert x.obs[key].dtype == y.obs[key].dtype
            np.testing.assert_array_equal(x.obs[key], y.obs[key])
        for name in ("actions", "executed_actions", "rewards", "dones"):
            assert getattr(x, name).dtype == getattr(y, name).dtype
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
        assert (x.final_obs is None) == (y.final_obs is None)
        for key in x.final_obs or {}:
            np.testing.assert_array_equal(x.final_obs[key], y.final_obs[key])
        assert x.attrs == y.attrs


def test_robomimic_round_trip_is_exact(dataset, tmp_path):
    path = export_robomimic(dataset, tmp_path / "rm.hdf5")
    back = import_robomimic(path, tmp_path / "back")
    _assert_same_episodes(dataset, back)
    for key in ("env_id", "env_kwargs", "observation_space", "action_space"):
        assert back.header[key] == dataset.header[key]
    assert back.masks() == dataset.masks()


def test_robomimic_layout(dataset, tmp_path):
    path = export_robomimic(dataset, tmp_path / "rm.hdf5")
    episodes = list(dataset.episodes())
    with h5py.File(path, "r") as f:
        data = f["data"]
        assert data.attrs["total"] == sum(len(e) for e in episodes)
        env_args = json.loads(data.attrs["env_args"])
        assert env_args == {"env_name": dataset.env_id, "type": 2, "env_kwargs": dataset.env_kwargs}
        assert sorted(data) == [f"demo_{i}" for i in range(5)]
        demo = data["demo_1"]
        assert demo.attrs["num_samples"] == len(episodes[1])
        np.testing.assert_array_equal(demo["obs/image"][()], episodes[1].obs["image"])
        np.testing.assert_array_equal(demo["next_obs/state"][:-1], episodes[1].obs["state"][1:])
        np.testing.assert_array_equal(demo["next_obs/state"][-1], episodes[1].final_obs["state"])
        assert [n.decode() for n in f["mask/valid"][()]] == ["demo_2", "demo_3"]
    with pytest.raises(ImitlabError, match="exists"):
        export_robomimic(dataset, path)


def test_import_a_foreign_robomimic_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "foreign.hdf5"
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {"horizon": 10}})
        for i, n in ((0, 6), (1, 4)):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = n
            g["obs/agentview_image"] = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
            g["obs/robot0_eef_pos"] = rng.normal(size=(n, 3))
            g["next_obs/robot0_eef_pos"] = rng.normal(size=(n, 3))
            g["next_obs/agentview_image"] = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
            g["actions"] = rng.uniform(-1, 1, (n, 7))
            g["rewards"] = np.zeros(n)
            g["dones"] = np.eye(n, dtype=np.int64)[-1]
        f["mask/train"] = np.array([b"demo_1"])
        data.attrs["total"] = 10
    ds = import_robomimic(path, tmp_path / "imported")
    assert ds.env_id == "Lift" and ds.env_kwargs == {"horizon": 10} and len(ds) == 2
    first = next(ds.episodes())
    assert first.actions.dtype == np.float32 and first.actions.shape == (6, 7)
    assert first.obs["robot0_eef_pos"].dtype == np.float32 and first.final_obs["robot0_eef_pos"].dtype == np.float32
    assert first.attrs["source"] == "imported" and "success" not in first.attrs
    assert ds.masks() == {"train": ["demo_000001"]}
    assert ds.observation_space["agentview_image"].shape == (8, 8, 3)
    with pytest.raises(ImitlabError, match="not empty"):
        import_robomimic(path, tmp_path / "imported")
    assumed = import_robomimic(path, tmp_path / "assumed", env_id="imitlab/Reach-v0", assume_success=True)
    assert assumed.env_id == "imitlab/Reach-v0" and all(a["success"] for a in assumed.episode_attrs())

    with h5py.File(path, "a") as f:  # a demo without actions: the import fails and leaves nothing behind
        del f["data/demo_1/actions"]
    with pytest.raises(ImitlabError, match="corrupt demo demo_1"):
        import_robomimic(path, tmp_path / "partial")
    assert not (tmp_path / "partial").exists()


def test_imitation_trajectories_have_dict_obs_and_next_observation(dataset):
    from imitation.data import types

    trajs = to_imitation_trajectories(dataset)
    episodes = list(dataset.episodes())
    assert len(trajs) == len(episodes)
    for traj, ep in zip(trajs, episodes):
        assert isinstance(traj, types.TrajectoryWithRew) and isinstance(traj.obs, types.DictObs)
        assert len(traj.obs) == len(ep) + 1 and len(traj.acts) == len(ep)
        images = traj.obs.get("image")
        assert images.shape == (len(ep) + 1, 3, 36, 36)
        np.testing.assert_array_equal(images[:-1].transpose(0, 2, 3, 1), ep.obs["image"])
        final = ep.final_obs["state"] if ep.final_obs else ep.obs["state"][-1]
        np.testing.assert_array_equal(traj.obs.get("state")[-1], final)
    assert len(to_imitation_trajectories(dataset, mask="train", successful_only=True)) == 3
    space = imitation_observation_space(dataset)
    assert space["image"].shape == (3, 36, 36) and space.contains(trajs[0].obs[0].unwrap())


@pytest.mark.filterwarnings("ignore::UserWarning:imitation")  # imitation 1.0.1's own internals warn
def test_imitation_bc_trains_on_converted_demos(dataset):
    """imitation's BC with its default dict-obs policy: SB3's CombinedExtractor (NatureCNN on the camera,
    flatten on the state) under a small MLP."""
    import torch
    from imitation.algorithms import bc

    torch.manual_seed(0)
    trainer = bc.BC(
        observation_space=imitation_observation_space(dataset),
        action_space=dataset.action_space,
        demonstrations=to_imitation_trajectories(dataset),
        rng=np.random.default_rng(0),
        batch_size=16,
        device="cpu",
    )
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.train(n_batches=4, log_interval=1000, progress_bar=False)
    changed = [not torch.equal(a, b.detach()) for a, b in zip(before, trainer.policy.parameters())]
    assert sum(changed) > len(changed) // 2
    extractor = trainer.policy.features_extractor
    assert type(extractor).__name__ == "CombinedExtractor" and "image" in extractor.extractors
    obs = to_imitation_trajectories(dataset)[0].obs[:4]
    actions, _ = trainer.policy.predict(obs.unwrap(), deterministic=True)
    assert actions.shape == (4, 2) and np.isfinite(actions).all()
