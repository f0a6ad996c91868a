"""Policy networks: pretrained weight loading, shapes, frozen backbones, checkpoints and their failure modes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from imitlab.core.errors import ImitlabError
from imitlab.policies import (
    ImagePolicy,
    Lite0Encoder,
    NatureCNNEncoder,
    PolicyConfig,
    SpatialSoftmax,
    load_policy,
    make_encoder,
    read_policy_metadata,
    save_policy,
    state_statistics,
)
from imitlab.policies.encoders import lite0_backbone, read_lite0_imagenet_state

torch.set_num_threads(2)


def _images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)


def _config(**overrides) -> PolicyConfig:
    values = dict(backbone="nature_cnn", image_size=84, state_dim=4, action_dim=3, head_hidden=(32,),
                  state_mean=[0.5, -1.0, 2.0, 0.0], state_std=[1.0, 2.0, 0.5, 3.0])
    values.update(overrides)
    return PolicyConfig(**values)


@pytest.fixture(scope="module")
def imagenet_state() -> dict[str, torch.Tensor]:
    return read_lite0_imagenet_state()


@pytest.fixture(scope="module")
def lite0_policy() -> ImagePolicy:
    torch.manual_seed(0)
    return ImagePolicy(_config(backbone="lite0", image_size=96, image_keys=("image", "wrist_image")))


# --- encoders -------------------------------------------------------------------------------------------------


#: Our encoder's module names -> the package's (ImageNet state dict) names.
_IMAGENET_NAMES = {"stem.0.": "_conv_stem.", "stem.1.": "_bn0.", "blocks.": "_blocks.", "pool.0.": "_conv_head.",
                   "pool.1.": "_bn1."}


def _imagenet_named(encoder: Lite0Encoder) -> dict[str, torch.Tensor]:
    """The encoder's pretrained tensors under the ImageNet file's names (new layers left out)."""
    named = {}
    for name, tensor in encoder.state_dict().items():
        for ours, theirs in _IMAGENET_NAMES.items():
            if name.startswith(ours):
                named[theirs + name[len(ours):]] = tensor
    return named


def test_lite0_loads_every_imagenet_tensor_except_the_classifier(imagenet_state):
    loaded = _imagenet_named(Lite0Encoder(96, pretrained=True))
    assert set(loaded) == set(imagenet_state) - {"_fc.weight", "_fc.bias"}
    for name, tensor in loaded.items():
        assert torch.equal(tensor, imagenet_state[name]), name


def test_lite0_spatial_softmax_keeps_the_imagenet_stride16_blocks_and_drops_the_rest(imagenet_state):
    encoder = Lite0Encoder(84, pretrained=True, pooling="spatial_softmax", keypoints=8)
    loaded = _imagenet_named(encoder)
    expected = {k for k in imagenet_state if k.startswith(("_conv_stem.", "_bn0."))
                or (k.startswith("_blocks.") and int(k.split(".")[1]) <= 10)}
    assert set(loaded) == expected
    for name, tensor in loaded.items():
        assert torch.equal(tensor, imagenet_state[name]), name
    assert set(encoder.state_dict()) - {ours for ours in encoder.state_dict()
                                        if ours.startswith(("stem.", "blocks."))} == {
        "pool.keypoints.weight", "pool.keypoints.bias", "pool.log_temperature", "pool.grid"}
    with torch.no_grad():
        features = encoder.eval()(_images(3, 84))
    assert encoder.features_dim == 16 and features.shape == (3, 16)
    assert features.abs().max() <= 1.0


def test_spatial_softmax_returns_the_position_of_each_peak():
    pool = SpatialSoftmax(channels=2, height=5, width=7, keypoints=2)
    with torch.no_grad():
        pool.keypoints.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        pool.keypoints.bias.zero_()
        pool.log_temperature.fill_(math.log(0.01))  # sharp: the expectation is the arg max
    maps = torch.zeros(1, 2, 5, 7)
    maps[0, 0, 0, 6] = 1.0  # top right
    maps[0, 1, 2, 3] = 1.0  # centre
    with torch.no_grad():
        xy = pool(maps).view(2, 2)
    torch.testing.assert_close(xy, torch.tensor([[1.0, -1.0], [0.0, 0.0]]), atol=1e-4, rtol=0)


def test_lite0_without_pretraining_differs_from_imagenet(imagenet_state):
    torch.manual_seed(0)
    encoder = Lite0Encoder(96, pretrained=False)
    assert not torch.equal(_imagenet_named(encoder)["_conv_stem.weight"], imagenet_state["_conv_stem.weight"])


def test_lite0_rejects_a_state_dict_with_a_missing_key(imagenet_state):
    broken = {k: v for k, v in imagenet_state.items() if k != "_blocks.3._bn1.weight"}
    with pytest.raises(ImitlabError, match="_blocks.3._bn1.weight"):
        lite0_backbone(96, broken)


def test_lite0_rejects_a_state_dict_with_a_wrong_shape(imagenet_state):
    broken = dict(imagenet_state)
    broken["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(ImitlabError, match="_conv_stem.weight"):
        lite0_backbone(96, broken)


def test_lite0_normalises_inception_style():
    encoder = Lite0Encoder(84, pretrained=False)
    images = torch.tensor([0, 127, 255], dtype=torch.uint8).view(1, 1, 3, 1).expand(1, 1, 3, 3)
    x = encoder.prepare(images)
    assert x.shape == (1, 3, 1, 3)
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x[0, 0, 0], torch.tensor([-127 / 128, 0.0, 1.0]))


@pytest.mark.parametrize("size", [84, 96])
@pytest.mark.parametrize(("backbone", "features_dim"), [("lite0", 1280), ("nature_cnn", 512)])
def test_encoder_output_shape(backbone, features_dim, size):
    encoder = make_encoder(backbone, size, pretrained=False).eval()
    with torch.no_grad():
        features = encoder(_images(2, size))
    assert encoder.features_dim == features_dim
    assert features.shape == (2, features_dim)
    assert torch.isfinite(features).all()


def test_channels_last_and_contiguous_layouts_compute_the_same_features():
    torch.manual_seed(0)
    fast = NatureCNNEncoder(84)
    plain = NatureCNNEncoder(84, channels_last=False)
    plain.load_state_dict(fast.state_dict())
    images = _images(2, 84)
    torch.testing.assert_close(fast(images), plain(images))


def test_unknown_backbone_is_a_user_error():
    with pytest.raises(ImitlabError, match="resnet"):
        make_encoder("resnet", 96, pretrained=False)
    with pytest.raises(ImitlabError, match="backbone"):
        _config(backbone="resnet")


# --- policy ---------------------------------------------------------------------------------------------------


def test_forward_shape_and_range(lite0_policy):
    lite0_policy.eval()
    state = torch.randn(3, 4) * 100  # large inputs would saturate an unbounded head
    with torch.no_grad():
        actions = lite0_policy(state, _images(3, 96, 1), _images(3, 96, 2))
    assert actions.shape == (3, 3)
    assert actions.dtype == torch.float32
    assert (actions.abs() <= 1).all()


def test_forward_is_head_of_encode(lite0_policy):
    lite0_policy.eval()
    state, images = torch.randn(2, 4), [_images(2, 96, 1), _images(2, 96, 2)]
    with torch.no_grad():
        features = lite0_policy.encode(images)
        assert features.shape == (2, 2 * 1280)
        torch.testing.assert_close(lite0_policy.head_forward(features, state), lite0_policy(state, *images))


def test_state_is_normalised_with_config_statistics():
    policy = ImagePolicy(_config()).eval()
    config = policy.config
    shifted = _config(state_mean=[0.0] * 4, state_std=[1.0] * 4)
    reference = ImagePolicy(shifted).eval()
    reference.load_state_dict(policy.state_dict())
    raw = torch.randn(2, 4)
    normalised = (raw - torch.tensor(config.state_mean)) / torch.tensor(config.state_std)
    image = _images(2, 84)
    with torch.no_grad():
        torch.testing.assert_close(policy(raw, image), reference(normalised, image))


def test_predict_single_matches_batch(lite0_policy):
    lite0_policy.train()
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8),
        "wrist_image": rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8),
        "state": rng.normal(size=(3, 4)).astype(np.float32),
    }
    batched = lite0_policy.predict(batch)
    assert batched.shape == (3, 3) and batched.dtype == np.float32
    for i in range(3):
        single = lite0_policy.predict({key: value[i] for key, value in batch.items()})
        assert single.shape == (3,)
        np.testing.assert_allclose(single, batched[i], atol=1e-5)
    assert lite0_policy.training, "predict must restore the training mode"


def test_predict_rejects_mismatched_observations():
    policy = ImagePolicy(_config())
    good = {"image": np.zeros((84, 84, 3), np.uint8), "state": np.zeros(4, np.float32)}
    with pytest.raises(ImitlabError, match="uint8"):
        policy.predict({**good, "image": np.zeros((96, 96, 3), np.uint8)})
    with pytest.raises(ImitlabError, match="state"):
        policy.predict({**good, "state": np.zeros(5, np.float32)})
    with pytest.raises(ImitlabError, match="lacks"):
        policy.predict({"state": good["state"]})


def test_parameter_groups_partition_the_model(lite0_policy):
    backbone = {id(p) for p in lite0_policy.backbone_parameters()}
    head = {id(p) for p in lite0_policy.head_parameters()}
    assert backbone and head and not backbone & head
    assert backbone | head == {id(p) for p in lite0_policy.parameters()}


def test_frozen_backbone_gets_no_gradient_and_keeps_batchnorm_statistics():
    torch.manual_seed(0)
    policy = ImagePolicy(_config(backbone="lite0", image_size=84, pretrained=False))
    policy.set_backbone_trainable(False)
    policy.train()
    assert not policy.encoder.training and policy.head.training
    bn_before = policy.encoder.stem[1].running_mean.clone()
    loss = policy(torch.randn(4, 4), _images(4, 84)).square().sum()
    loss.backward()
    assert all(p.grad is None for p in policy.backbone_parameters())
    assert all(p.grad is not None for p in policy.head_parameters())
    assert torch.equal(policy.encoder.stem[1].running_mean, bn_before)

    policy.set_backbone_trainable(True)
    assert policy.encoder.training
    policy(torch.randn(4, 4), _images(4, 84)).square().sum().backward()
    assert all(p.grad is not None for p in policy.encoder.stem[0].parameters())
    assert not torch.equal(policy.encoder.stem[1].running_mean, bn_before)


def test_frozen_blocks_stay_fixed_and_their_cached_output_gives_the_same_actions():
    torch.manual_seed(0)
    policy = ImagePolicy(_config(backbone="lite0", image_size=84, pretrained=False, pooling="spatial_softmax"))
    policy.encoder.freeze_blocks(6)  # the stem and blocks 0..4
    policy.set_backbone_trainable(True)  # must not thaw them
    policy.train()
    frozen = [policy.encoder.stem, *policy.encoder.blocks[:5]]
    trainable = list(policy.encoder.blocks[5:])
    bn_before = policy.encoder.blocks[4]._bn1.running_mean.clone()
    images, state = _images(4, 84), torch.randn(4, 4)
    policy(state, images).square().sum().backward()
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.grad is not None for m in trainable for p in m.parameters())
    assert torch.equal(policy.encoder.blocks[4]._bn1.running_mean, bn_before)

    policy.eval()
    with torch.no_grad():
        cached = policy.frozen_features([images])
        assert cached[0].shape == (4, 40, 11, 11)
        torch.testing.assert_close(policy.head_forward(policy.encode_frozen(cached), state), policy(state, images))


def test_frozen_batchnorm_makes_training_mode_compute_what_rollouts_compute():
    torch.manual_seed(0)
    policy = ImagePolicy(_config(backbone="lite0", image_size=48, pooling="spatial_softmax"))
    policy.encoder.drop_connect_rate = 0.0  # stochastic depth aside, training and eval mode then agree
    images, state = _images(4, 48), torch.randn(4, 4)
    with torch.no_grad():
        rollout = policy.eval()(state, images)
        policy.encoder.freeze_batchnorm()
        torch.testing.assert_close(policy.train()(state, images), rollout)
        policy.encoder.freeze_batchnorm(False)
        assert not torch.allclose(policy.train()(state, images), rollout, atol=1e-3)


def test_freezing_more_blocks_than_there_are_or_any_of_nature_cnn_is_a_user_error():
    encoder = Lite0Encoder(84, pretrained=False, pooling="spatial_softmax")
    with pytest.raises(ImitlabError, match="can freeze 0 to 12"):
        encoder.freeze_blocks(13)
    with pytest.raises(ImitlabError, match="no pretrained blocks"):
        NatureCNNEncoder(84).freeze_blocks(1)
    with pytest.raises(ImitlabError, match="pooling"):
        _config(pooling="max")


# --- config ---------------------------------------------------------------------------------------------------


def test_config_json_round_trip():
    config = _config(image_keys=("image", "wrist_image"), head_hidden=(64, 32), dropout=0.1)
    restored = PolicyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.image_keys, tuple) and isinstance(restored.head_hidden, tuple)


def test_config_defaults_to_identity_normalisation():
    config = PolicyConfig(state_dim=2, action_dim=1)
    assert config.state_mean == [0.0, 0.0] and config.state_std == [1.0, 1.0]


@pytest.mark.parametrize(
    "data",
    [
        {"state_dim": 2},
        {"state_dim": 2, "action_dim": 1, "colour": "red"},
        {"state_dim": 2, "action_dim": 1, "state_std": [1.0, 0.0]},
        {"state_dim": 2, "action_dim": 1, "state_mean": [1.0]},
        {"state_dim": 2, "action_dim": 1, "image_keys": "image"},
        {"state_dim": "2", "action_dim": 1},
        [1, 2],
    ],
)
def test_config_rejects_invalid_data(data):
    with pytest.raises(ImitlabError, match="invalid policy config"):
        PolicyConfig.from_dict(data)


def test_state_statistics_floor_constant_dimensions():
    states = np.array([[1.0, 5.0], [3.0, 5.0]])
    mean, std = state_statistics(states)
    assert mean == [2.0, 5.0]
    assert std == [1.0, 1e-3]
    PolicyConfig(state_dim=2, action_dim=1, state_mean=mean, state_std=std)


# --- checkpoints ----------------------------------------------------------------------------------------------


@pytest.fixture()
def saved(tmp_path) -> tuple[ImagePolicy, Path]:
    torch.manual_seed(0)
    policy = ImagePolicy(_config(backbone="lite0", image_size=84, pretrained=False, dropout=0.2))
    with torch.no_grad():  # move BatchNorm statistics off their defaults so the round trip must carry them
        policy.train()(torch.randn(4, 4), _images(4, 84))
    save_policy(policy, tmp_path / "ckpt", {"env_id": "imitlab/Reach-v0", "env_kwargs": {"image_size": 84}})
    return policy, tmp_path / "ckpt"


def test_save_load_round_trip_gives_identical_outputs(saved):
    policy, directory = saved
    loaded, metadata = load_policy(directory)
    assert metadata == {"env_id": "imitlab/Reach-v0", "env_kwargs": {"image_size": 84}}
    assert loaded.config == policy.config
    assert not loaded.training
    policy.eval()
    state, image = torch.randn(3, 4), _images(3, 84)
    with torch.no_grad():
        assert torch.equal(loaded(state, image), policy(state, image))


def test_metadata_can_be_read_without_building_the_network(saved):
    _, directory = saved
    assert read_policy_metadata(directory)["env_id"] == "imitlab/Reach-v0"
    (directory / "policy.safetensors").unlink()
    assert read_policy_metadata(directory)["env_kwargs"] == {"image_size": 84}
    with pytest.raises(ImitlabError, match="policy directory not found"):
        read_policy_metadata(directory / "missing")


def test_checkpoint_json_layout(saved):
    _, directory = saved
    document = json.loads((directory / "policy.json").read_text())
    assert document["format"] == "imitlab-policy" and document["format_version"] == 1
    assert document["config"]["backbone"] == "lite0"
    assert sorted(p.name for p in directory.iterdir()) == ["policy.json", "policy.safetensors"]


def test_save_rejects_unserialisable_metadata(tmp_path):
    with pytest.raises(ImitlabError, match="metadata"):
        save_policy(ImagePolicy(_config()), tmp_path, {"space": object()})


def _single_line_error(directory: Path, match: str) -> None:
    with pytest.raises(ImitlabError, match=match) as info:
        load_policy(directory)
    assert "\n" not in str(info.value)


def test_load_missing_directory(tmp_path):
    _single_line_error(tmp_path / "nope", "policy directory not found")


@pytest.mark.parametrize("name", ["policy.json", "policy.safetensors"])
def test_load_missing_file(saved, name):
    _, directory = saved
    (directory / name).unlink()
    _single_line_error(directory, f"{name}: file not found")


def test_load_truncated_safetensors(saved):
    _, directory = saved
    path = directory / "policy.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _single_line_error(directory, "policy.safetensors: corrupt or truncated")


def test_load_garbage_safetensors(saved):
    _, directory = saved
    (directory / "policy.safetensors").write_bytes(b"\x00" * 7)
    _single_line_error(directory, "policy.safetensors: corrupt or truncated")


def test_load_garbled_json(saved):
    _, directory = saved
    path = directory / "policy.json"
    path.write_text(path.read_text()[:-20])
    _single_line_error(directory, "policy.json: not valid JSON")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(format="something-else"), "not an imitlab-policy document"),
        (lambda d: d.update(format_version=2), "unsupported format_version 2"),
        (lambda d: d["config"].update(state_dim="four"), "invalid policy config"),
        (lambda d: d.update(metadata=[1]), "\"metadata\" must be an object"),
    ],
)
def test_load_bad_json_content(saved, edit, match):
    _, directory = saved
    path = directory / "policy.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    _single_line_error(directory, f"policy.json: {match}")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update(action_dim=5), "shape mismatch head"),
        (lambda c: c.update(head_hidden=[32, 32]), "missing head.6.bias"),
        (lambda c: c.update(backbone="nature_cnn"), "missing encoder.cnn.0.bias"),
    ],
)
def test_load_weights_that_do_not_match_the_config(saved, edit, match):
    _, directory = saved
    path = directory / "policy.json"
    document = json.loads(path.read_text())
    edit(document["config"])
    path.write_text(json.dumps(document))
    _single_line_error(directory, f"policy.safetensors: weights do not match policy.json .*{match}")
