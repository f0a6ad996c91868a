"""Policy heads (``--head mlp|gmm|chunk``): each one learns, the mixture keeps the modes MSE averages, the loader
serves action windows cut at episode ends, chunks are executed open-loop or ensembled as ACT does, and every head's
ONNX export acts as its torch policy step by step (chunk state carried) and in closed loop, seed by seed. A chunk
head with several proposals keeps both ways the demos went apart and, ensembling, keeps to the one it chose."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imitlab.core.action_execution import ENSEMBLE_DECAY, ActOptions, EpisodeExecutor, Execution, head_outputs
from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.demos.dataset import DemoDataset
from imitlab.demos.loader import DemoLoader
from imitlab.demos.synthetic import write_synthetic_dataset
from imitlab.deploy.bundle import deploy
from imitlab.deploy.export import export_onnx, parity_error
from imitlab.deploy.runtime import OnnxPolicy, load_bundle
from imitlab.agents import resolve_agent
from imitlab.evaluation.evaluate import evaluate
from imitlab.policies import ImagePolicy, PolicyConfig, load_policy
from imitlab.policies.heads import GMM_MIN_STD, LR_SCALES, GMMHead, action_horizon
from imitlab.policies.io import CONFIG_FILE, policy_dir
from imitlab.training.augment import random_shift
from imitlab.training.bc import TrainConfig, train

HEADS = ("mlp", "gmm", "chunk")
SEEDS = [HELD_OUT_SEED_START, HELD_OUT_SEED_START + 1]


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a busy machine each op then waits for it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tiny_demos: Path, tiny_run: Path, tmp_path_factory) -> dict[str, Path]:
    """A trained policy per head on the tiny demos: the session's mlp run, a gmm and a chunk run, a chunk run
    that sees 2 frames per camera ("history") and one that proposes 2 chunks ("proposals"; one epoch each)."""
    root = tmp_path_factory.mktemp("heads")
    out = {"mlp": tiny_run}
    for name, head, history, modes in (("gmm", "gmm", 1, 1), ("chunk", "chunk", 1, 1), ("history", "chunk", 2, 1),
                                       ("proposals", "chunk", 1, 2)):
        train(TrainConfig(dataset=str(tiny_demos), out=str(root / name), backbone="nature_cnn", pretrained=False,
                          epochs=1, eval_episodes=1, val_fraction=0.25, progress=False, head=head, chunk_size=4,
                          chunk_modes=modes, history=history, threads=1))
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def episodes(tiny_demos: Path) -> list:
    return list(DemoDataset(tiny_demos).episodes())


@pytest.mark.parametrize("head", HEADS)
def test_each_head_trains_and_its_loss_falls_on_a_toy_batch(head, one_thread):
    """The head's loss on 8 frames' features (encoded once: the encoder is the same for every head) and random
    targets, a chunk head's 3 steps ahead."""
    torch.manual_seed(0)
    policy = ImagePolicy(PolicyConfig(backbone="nature_cnn", pretrained=False, image_size=48, state_dim=3,
                                      action_dim=2, head=head, chunk_size=3))
    generator = torch.Generator().manual_seed(0)
    state = torch.randn(8, 3, generator=generator)
    with torch.no_grad():
        features = policy.encode([torch.randint(0, 256, (8, 48, 48, 3), dtype=torch.uint8, generator=generator)])
    horizon = action_horizon(policy.config)
    targets = torch.rand(8, horizon, 2, generator=generator) * 1.6 - 0.8
    mask = torch.ones(8, horizon, dtype=torch.bool)
    actions, mask = (targets, mask) if head == "chunk" else (targets[:, 0], None)
    optimizer = torch.optim.Adam(policy.head_parameters(), lr=1e-3 * LR_SCALES[head])  # as make_optimizer
    losses = []
    for _ in range(60):
        loss = policy.loss(policy.head_outputs(features, state), actions, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    if head == "gmm":  # a negative log-likelihood: it falls by nats, below zero once the modes tighten
        assert losses[-1] < losses[0] - 1.0
    else:
        assert losses[-1] < 0.6 * losses[0]


def test_gmm_acts_on_the_likelier_mode_where_mse_averages_the_two(one_thread):
    """The same input, followed by +0.6 seven times in ten and by -0.6 otherwise: MSE learns the mean (0.24, an
    action the demos never took); the mixture acts on +0.6, and sampling draws both modes in their proportions."""
    torch.manual_seed(0)
    features = torch.zeros(200, 4)
    state = torch.zeros(200, 0)
    actions = torch.where(torch.arange(200)[:, None] % 10 < 7, 0.6, -0.6).float()
    gmm_head = GMMHead(4, (32,), 1, modes=3, dropout=0.0)
    mlp_head = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1), torch.nn.Tanh())
    losses = {"gmm": lambda: gmm_head.loss(gmm_head.outputs(features, state), actions, None),
              "mlp": lambda: torch.nn.functional.mse_loss(mlp_head(features), actions)}  # the mlp head's loss
    for name, head in (("gmm", gmm_head), ("mlp", mlp_head)):
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
        for _ in range(300):
            loss = losses[name]()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        gmm = {k: v[:1].numpy() for k, v in gmm_head.outputs(features[:1], state[:1]).items()}
        mse_action = mlp_head(features[:1]).item()
    assert gmm["action"][0, 0] == pytest.approx(0.6, abs=0.05)
    assert mse_action == pytest.approx(0.24, abs=0.05)
    executor = EpisodeExecutor(Execution(head="gmm", sample=True), seed=3)
    draws = np.array([executor.act({k: v[0] for k, v in gmm.items()})[0] for _ in range(400)])
    near_a_mode = np.abs(np.abs(draws) - 0.6) < 4 * GMM_MIN_STD  # a sample spreads at least the floor's std
    assert 0.6 < np.mean(draws > 0) < 0.8 and np.mean(near_a_mode) > 0.95
    again = EpisodeExecutor(Execution(head="gmm", sample=True), seed=3)
    assert [again.act({k: v[0] for k, v in gmm.items()})[0] for _ in range(5)] == pytest.approx(draws[:5].tolist())


def test_chunk_proposals_keep_both_ways_and_their_logits_the_proportions(one_thread):
    """The loss of a head with 2 proposals, on chunks of +0.6 seven times in ten and of -0.6 otherwise, fitted by
    free proposals and logits: each proposal takes one way (winner-takes-all), the logits its share."""
    head = ImagePolicy(PolicyConfig(backbone="nature_cnn", pretrained=False, image_size=48, state_dim=0,
                                    action_dim=1, head="chunk", chunk_size=3, chunk_modes=2)).head
    actions = torch.where(torch.arange(20) % 10 < 7, 0.6, -0.6).reshape(20, 1, 1).expand(20, 3, 1)
    mask = torch.ones(20, 3, dtype=torch.bool)
    proposals = torch.nn.Parameter(torch.tensor([0.1, -0.1]).reshape(1, 2, 1, 1).repeat(1, 1, 3, 1))
    logits = torch.nn.Parameter(torch.zeros(1, 2))
    optimizer = torch.optim.Adam([proposals, logits], lr=0.02)
    for _ in range(300):
        loss = head.loss({"chunk_proposals": proposals.expand(20, -1, -1, -1), "chunk_logits": logits.expand(20, -1)},
                         actions, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert proposals.detach().numpy().ravel() == pytest.approx([0.6] * 3 + [-0.6] * 3, abs=0.05)
    assert torch.softmax(logits.detach(), dim=1)[0].numpy() == pytest.approx([0.7, 0.3], abs=0.05)


def test_the_proposal_nearest_in_squared_error_learns_a_chunk_whose_few_large_steps_differ(one_thread):
    """A demo chunk of small steps around 0 and one large step to come (a swerve): proposal 0 has the swerve's
    sign and a little offset on every small step, proposal 1 the small steps exactly and the opposite swerve. By L1
    proposal 1 is nearer (the many small steps outweigh the one large one); by squared error proposal 0 is, and it
    alone takes the winner's share of the gradient, so it is the one that moves towards the swerve."""
    head = ImagePolicy(PolicyConfig(backbone="nature_cnn", pretrained=False, image_size=48, state_dim=0,
                                    action_dim=1, head="chunk", chunk_size=10, chunk_modes=2)).head
    demo = torch.zeros(1, 10, 1)
    demo[0, 9, 0] = 0.6
    proposals = torch.zeros(1, 2, 10, 1)
    proposals[0, 0, :9, 0], proposals[0, 0, 9, 0] = 0.1, 0.3  # L1 1.2, squared 0.18
    proposals[0, 1, 9, 0] = -0.2  # L1 0.8, squared 0.64
    proposals.requires_grad_(True)
    head.loss({"chunk_proposals": proposals, "chunk_logits": torch.zeros(1, 2)}, demo,
              torch.ones(1, 10, dtype=torch.bool)).backward()
    steps = proposals.grad[0, :, 9, 0].abs()
    assert steps[0] > 10 * steps[1]


def test_the_chunk_heads_export_path_computes_what_torchs_transformer_layers_do(one_thread):
    """In eval mode (validation, export, serving) the chunk head runs its transformer as plain products (a far smaller
    ONNX graph); in training mode, torch's layers. Without dropout, the same weights give the same chunks."""
    torch.manual_seed(0)
    policy = ImagePolicy(PolicyConfig(backbone="nature_cnn", pretrained=False, image_size=48, state_dim=3,
                                      action_dim=2, head="chunk", chunk_size=4, chunk_modes=2))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        features = policy.encode([torch.randint(0, 256, (3, 48, 48, 3), dtype=torch.uint8, generator=generator)])
        state = torch.randn(3, 3, generator=generator)
        trained = policy.head.train().outputs(features, state)["chunk_proposals"]
        exported = policy.head.eval().outputs(features, state)["chunk_proposals"]
    assert torch.allclose(exported, trained, atol=1e-5) and not torch.equal(exported[:, 0], exported[:, 1])


def test_ensembling_proposals_keeps_to_the_plan_open_loop_takes_the_likeliest():
    """Two proposals, +1 and -1, whose logits swap every step: ensembling keeps the way its first (likeliest)
    chunk went instead of averaging both; open-loop takes each inference's likeliest."""
    up, down = np.ones((3, 1), np.float32), -np.ones((3, 1), np.float32)

    def outputs(step: int) -> dict[str, np.ndarray]:
        logits = np.array([1.0, 0.0] if step % 2 == 0 else [0.0, 1.0], np.float32)
        return {"action_chunk": up if step % 2 == 0 else down, "chunk_logits": logits,
                "chunk_proposals": np.stack([up, down])}

    ensemble = EpisodeExecutor(Execution(head="chunk", chunk_exec="ensemble"))
    assert [ensemble.act(outputs(step))[0] for step in range(5)] == [1.0] * 5
    open_loop = EpisodeExecutor(Execution(head="chunk", chunk_exec="open"))
    acted = [open_loop.act(outputs(step) if open_loop.needs_outputs() else None)[0] for step in range(6)]
    assert acted == [1.0] * 3 + [-1.0] * 3


@pytest.mark.parametrize("mode", ["memory", "chunked"])
def test_the_loader_serves_action_and_frame_windows_cut_at_episode_bounds(tmp_path, mode):
    dataset = DemoDataset(write_synthetic_dataset(tmp_path / "ds", episodes=3, length=12))
    episodes = list(dataset.episodes())
    actions = [episode.actions for episode in episodes]
    loader = DemoLoader(dataset, batch_size=5, shuffle=True, mode=mode, memory_budget_mb=0.002, action_horizon=4,
                        frame_history=3)
    seen = 0
    for batch in loader:
        assert batch.actions.shape[1:] == (4, actions[0].shape[1]) and batch.action_mask.shape == (len(batch.state), 4)
        for row in range(len(batch.state)):
            first = batch.actions[row, 0].numpy()
            episode, step = next((e, int(s[0])) for e, a in enumerate(actions)
                                 for s in [np.flatnonzero((a == first).all(axis=1))] if len(s))
            inside = min(4, len(actions[episode]) - step)
            np.testing.assert_array_equal(batch.action_mask[row].numpy(), np.arange(4) < inside)
            np.testing.assert_array_equal(batch.actions[row, :inside].numpy(), actions[episode][step:step + inside])
            # Past the end: the episode's last action repeated (masked out of the loss).
            np.testing.assert_array_equal(batch.actions[row, inside:].numpy(),
                                          np.repeat(actions[episode][-1:], 4 - inside, axis=0))
            # The last 3 frames, oldest first; before the episode's start, its first frame.
            expected = episodes[episode].obs["image"][[max(step - 2, 0), max(step - 1, 0), step]]
            np.testing.assert_array_equal(batch.images["image"][row].numpy(), expected)
            seen += 1
    assert seen == sum(len(a) for a in actions)
    assert loader.mode == mode


def test_open_loop_runs_each_chunk_to_its_end_and_ensembling_weights_older_chunks_more():
    chunks = [np.full((3, 1), float(i)) + np.arange(3)[:, None] / 10 for i in range(4)]
    open_loop = EpisodeExecutor(Execution(head="chunk", chunk_exec="open"))
    acted, inferred = [], []
    for step in range(6):
        inferred.append(open_loop.needs_outputs())
        acted.append(open_loop.act({"action_chunk": chunks[step // 3]} if inferred[-1] else None)[0])
    assert inferred == [True, False, False, True, False, False]
    assert acted == pytest.approx([0.0, 0.1, 0.2, 1.0, 1.1, 1.2])
    ensemble = EpisodeExecutor(Execution(head="chunk", chunk_exec="ensemble"))
    acted = [ensemble.act({"action_chunk": chunk})[0] for chunk in chunks]
    # Step 3 is covered by the chunks of steps 1, 2 and 3 (the one of step 0 ended): weights exp(-m * i), oldest i=0.
    weights = np.exp(-ENSEMBLE_DECAY * np.arange(3))
    assert acted[3] == pytest.approx(float(weights @ np.array([1.2, 2.1, 3.0]) / weights.sum()))
    assert acted[0] == pytest.approx(0.0)


def _step_by_step(policy, episode, seed: int, options: ActOptions) -> np.ndarray:
    """The actions a policy (torch or ONNX) takes along a recorded episode, its head's state (and frames) carried."""
    executor = EpisodeExecutor(Execution.of(policy.policy_config if isinstance(policy, OnnxPolicy)
                                            else policy.config.to_dict(), options), seed)
    actions = []
    for t in range(len(episode.actions)):
        obs = executor.observe({k: v[t] for k, v in episode.obs.items() if k in ("state", "image")})
        actions.append(executor.act(policy.predict_outputs(obs) if executor.needs_outputs() else None))
    return np.array(actions)


@pytest.mark.parametrize("head, options", [("mlp", ActOptions()), ("gmm", ActOptions()),
                                           ("gmm", ActOptions(sample=True)), ("chunk", ActOptions("ensemble")),
                                           ("chunk", ActOptions("open")), ("history", ActOptions("ensemble")),
                                           ("proposals", ActOptions("ensemble")), ("proposals", ActOptions("open"))])
def test_onnx_acts_as_torch_along_recorded_episodes(runs, episodes, tmp_path, head, options):
    policy, _ = load_policy(policy_dir(runs[head]))
    model = export_onnx(policy, tmp_path / "model.onnx")
    spec = {"image_keys": ["image"], "image_size": 48, "state_dim": policy.config.state_dim, "action_dim": 2,
            "policy_config": policy.config.to_dict()}
    runtime = OnnxPolicy(model, spec)
    assert runtime.execution.history == (2 if head == "history" else 1)
    for seed, episode in enumerate(episodes[:2]):
        expected = _step_by_step(policy, episode, seed, options)
        assert np.max(np.abs(_step_by_step(runtime, episode, seed, options) - expected)) <= 1e-4
        # The runtime's own per-episode controller does the same.
        controller = runtime.episode(seed, options)
        actual = [controller.act({k: v[t] for k, v in episode.obs.items() if k in ("state", "image")})
                  for t in range(len(episode.actions))]
        assert np.max(np.abs(np.array(actual) - expected)) <= 1e-4
    if head in ("chunk", "proposals"):  # executing chunks differs from acting on each step's first action: state was carried
        last = episodes[1]
        first = runtime.predict({k: last.obs[k][:len(last.actions)] for k in ("state", "image")})
        assert np.max(np.abs(expected - first)) > 1e-3


@pytest.fixture(scope="module")
def bundles(runs, tmp_path_factory) -> dict[str, Path]:
    """The gmm, chunk and history runs deployed (bar 0: the gate's parity check and closed-loop run, not its bar)."""
    root = tmp_path_factory.mktemp("head-bundles")
    return {name: deploy(runs[name], 0.0, episodes=len(SEEDS), out=root / name, workers=2, videos=0,
                         progress=False).bundle for name in ("gmm", "chunk", "history", "proposals")}


@pytest.mark.parametrize("name", ["gmm", "chunk", "history", "proposals"])
def test_the_bundle_acts_as_torch_in_closed_loop_seed_by_seed(runs, bundles, name):
    spec = json.loads((bundles[name] / "bundle.json").read_text())
    assert [o["name"] for o in spec["outputs"]] == list(head_outputs(spec["policy_config"]))
    assert ("chunk_proposals" in head_outputs(spec["policy_config"])) == (name == "proposals")
    assert spec["inputs"][1]["shape"] == (["batch", 2, 48, 48, 3] if name == "history" else ["batch", 48, 48, 3])
    assert spec["validation"]["parity_max_abs_diff"] <= 1e-4
    # The gate rolled the ONNX model out on the same seeds through the bundle's own agent.
    onnx_run = spec["validation"]["fp32"]
    torch_run = evaluate(resolve_agent(str(runs[name])), SEEDS, workers=2, progress=False)
    assert {int(seed): ok for seed, ok in onnx_run["per_seed_success"].items()} == {
        e.seed: e.success for e in torch_run.episodes}
    assert onnx_run["mean_length"] == pytest.approx(np.mean([e.length for e in torch_run.episodes]))
    assert onnx_run["mean_return"] == pytest.approx(np.mean([e.episode_return for e in torch_run.episodes]), abs=1e-3)


def test_act_sessions_carry_the_head_state_and_stateless_requests_get_the_chunk(bundles, episodes):
    from fastapi.testclient import TestClient

    from imitlab.deploy.server import ServerSettings, create_app
    from imitlab.deploy.wire import encode_observation

    client = TestClient(create_app(bundles["chunk"], ServerSettings(allowed_hosts=("testserver",), max_sessions=1)))
    runtime = load_bundle(bundles["chunk"])
    episode = episodes[0]
    frames = [{k: episode.obs[k][t] for k in ("state", "image")} for t in range(6)]
    controller = runtime.episode(seed=5)
    for t, obs in enumerate(frames):
        answer = client.post("/act", json=encode_observation(obs, ["image"], session="ep-1", seed=5)).json()
        assert answer["session"] == "ep-1" and answer["step"] == t and "action_chunk" not in answer
        np.testing.assert_allclose(answer["action"], controller.act(obs), atol=1e-6)
    stateless = client.post("/act", json=encode_observation(frames[0], ["image"])).json()
    outputs = runtime.predict_outputs(frames[0])
    np.testing.assert_allclose(stateless["action_chunk"], outputs["action_chunk"], atol=1e-6)
    np.testing.assert_allclose(stateless["action"], outputs["action"], atol=1e-6)
    # A second session evicts the first (max_sessions=1): "ep-1" then starts again at step 0.
    client.post("/act", json=encode_observation(frames[0], ["image"], session="ep-2"))
    assert client.post("/act", json=encode_observation(frames[0], ["image"], session="ep-1")).json()["step"] == 0
    for body, message in [({**encode_observation(frames[0], ["image"]), "seed": 1}, "give \"session\" too"),
                          (encode_observation(frames[0], ["image"], session="no spaces"), "must be 1 to 64"),
                          (encode_observation(frames[0], ["image"], session="ep", seed=-1), "\"seed\" must be")]:
        refused = client.post("/act", json=body)
        assert refused.status_code == 422 and message in refused.json()["detail"]
    schema = client.get("/openapi.json").json()["paths"]["/act"]["post"]
    assert "action_chunk" in schema["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert "session" in schema["requestBody"]["content"]["application/json"]["schema"]["properties"]
    # A policy with a frame history takes one frame per request too; its session keeps the earlier ones.
    history = TestClient(create_app(bundles["history"], ServerSettings(allowed_hosts=("testserver",))))
    assert history.get("/ready").status_code == 200
    controller = load_bundle(bundles["history"]).episode(seed=0)
    for obs in frames[:3]:
        answer = history.post("/act", json=encode_observation(obs, ["image"], session="h")).json()
        np.testing.assert_allclose(answer["action"], controller.act(obs), atol=1e-6)
    assert history.post("/act", json=encode_observation(frames[0], ["image"])).status_code == 200


def test_a_history_sees_each_cameras_last_frames_oldest_first_and_shifts_them_alike():
    executor = EpisodeExecutor(Execution(history=3))
    frames = [np.full((4, 4, 3), t, np.uint8) for t in range(4)]
    seen = []
    for frame in frames:
        seen.append(executor.observe({"state": np.zeros(1, np.float32), "image": frame})["image"][:, 0, 0, 0])
        executor.act({"action": np.zeros(1, np.float32)})
    assert [s.tolist() for s in seen] == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]
    windows = torch.randint(0, 256, (5, 3, 16, 16, 3), dtype=torch.uint8)
    shifted = random_shift(windows, 4, torch.Generator().manual_seed(0))
    for frame in range(3):  # every frame of a window gets the window's one shift
        torch.testing.assert_close(shifted[:, frame], random_shift(windows[:, frame], 4, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("head", ["gmm", "chunk"])
def test_gmm_and_chunk_heads_take_a_command_and_export_with_parity(tmp_path, head, one_thread):
    """A category input (Town-v0's route command) reaches a gmm head one-hot and a chunk head as a token."""
    torch.manual_seed(0)
    fields = dict(backbone="nature_cnn", pretrained=False, image_size=48, state_dim=3, action_dim=2, head=head,
                  chunk_size=3, category_keys=("command",), category_sizes=(4,), category_starts=(1,))
    config = PolicyConfig(**fields, command_head="concat")
    policy = ImagePolicy(config)
    spec = {"image_keys": ["image"], "image_size": 48, "state_dim": 3, "action_dim": 2,
            "categories": [{"key": "command", "n": 4, "start": 1}], "policy_config": config.to_dict()}
    runtime = OnnxPolicy(export_onnx(policy, tmp_path / "model.onnx"), spec)
    rng = np.random.default_rng(0)
    obs = {"state": rng.normal(size=(6, 3)).astype(np.float32),
           "image": rng.integers(0, 256, (6, 48, 48, 3), dtype=np.uint8), "command": rng.integers(1, 5, 6)}
    assert parity_error(policy, runtime, obs) <= 1e-4
    outputs = {command: policy.predict_outputs({**obs, "command": np.full(6, command)}) for command in (1, 4)}
    name = "gmm_means" if head == "gmm" else "action_chunk"
    assert np.max(np.abs(outputs[1][name] - outputs[4][name])) > 1e-4  # the command changes what the head says
    with pytest.raises(ImitlabError, match="command_head must be concat"):
        PolicyConfig(**fields, command_head="branched")


def test_a_policy_json_from_before_heads_loads_as_the_mlp_head(tiny_run, tmp_path, episodes):
    old = tmp_path / "old"
    shutil.copytree(policy_dir(tiny_run), old)
    document = json.loads((old / CONFIG_FILE).read_text())
    for name in ("head", "gmm_modes", "chunk_size", "chunk_modes", "chunk_exec", "history"):
        del document["config"][name]
    (old / CONFIG_FILE).write_text(json.dumps(document))
    policy, _ = load_policy(old)
    assert policy.config.head == "mlp"
    obs = {k: episodes[0].obs[k][:5] for k in ("state", "image")}
    np.testing.assert_array_equal(policy.predict(obs), load_policy(policy_dir(tiny_run))[0].predict(obs))


def test_bad_head_values_are_refused():
    for bad in ({"head": "diffusion"}, {"chunk_exec": "sideways"}, {"gmm_modes": 0}, {"chunk_size": 10**6},
                {"history": 0}, {"chunk_modes": 0}, {"chunk_modes": 1000}):
        with pytest.raises(ImitlabError):
            PolicyConfig(state_dim=1, action_dim=1, **bad)
    with pytest.raises(ImitlabError, match="sampling needs a gmm head"):
        Execution(head="chunk", sample=True)


@pytest.mark.parametrize("args, message", [
    (["train", "DEMOS", "--out", "OUT", "--head", "diffusion"], "head: must be one of mlp, gmm, chunk"),
    (["train", "DEMOS", "--out", "OUT", "--head", "chunk", "--chunk-size", "0"], "chunk_size: must be at least 1"),
    (["train", "DEMOS", "--out", "OUT", "--chunk-exec", "sideways"], "chunk_exec: must be one of open, ensemble"),
    (["train", "DEMOS", "--out", "OUT", "--history", "2", "--freeze-backbone"], "cannot train on frozen features"),
    (["eval", "RUN", "--out", "OUT", "--chunk-exec", "sideways"], "chunk exec must be one of open, ensemble"),
    (["eval", "RUN", "--out", "OUT", "--sample"], "sampling needs a gmm head; this policy's head is mlp"),
])
def test_bad_head_flags_are_one_line_and_exit_1(tiny_demos, tiny_run, tmp_path, monkeypatch, capsys, args, message):
    from imitlab.cli import main

    replaced = [{"DEMOS": str(tiny_demos), "RUN": str(tiny_run), "OUT": str(tmp_path / "out")}.get(a, a) for a in args]
    monkeypatch.setattr(sys, "argv", ["imitlab", *replaced])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("imitlab: error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()
