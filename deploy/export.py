"""Torch policy -> ONNX (fp32), optional int8 quantisation, and the torch-vs-ONNX parity check."""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
import torch

from imitlab.core.action_execution import head_outputs
from imitlab.core.errors import ImitlabError
from imitlab.deploy.runtime import OnnxPolicy
from imitlab.policies import ImagePolicy

#: ONNX opset: 17 runs on every onnxruntime >= 1.14.
OPSET = 17
#: int8 schemes: "static" (QDQ, activations calibrated on observations; quantises convolutions, see below) or
#: "dynamic" (weights only, MatMul/Gemm of the head; needs no calibration but leaves the CNN in fp32).
INT8_MODES = ("static", "dynamic")
#: Static int8 quantises only the pointwise (1x1) convolutions with at least this many weights (Lite0: the 1x1
#: convolutions of blocks 9-15 and its head convolution), or every layer when a model has none. At batch 1 those
#: layers are bound by reading their weights, which int8 cuts to a quarter; quantising every layer's activations
#: compounds the rounding (Lite0 at 96 px: actions moved by up to 0.11 on [-1, 1], these layers alone: ~0.03).
INT8_MIN_WEIGHTS = 65536


class _AllOutputs(torch.nn.Module):
    """The policy with every output of its head as a tuple, in ``head_outputs`` order (what the graph returns)."""

    def __init__(self, policy: ImagePolicy) -> None:
        super().__init__()
        self.policy = policy
        self.names = head_outputs(policy.config.to_dict())

    def forward(self, state: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.policy.outputs(state, *inputs)
        return tuple(outputs[name] for name in self.names)


def export_onnx(policy: ImagePolicy, path: Path) -> Path:
    """Write ``policy`` as ONNX: inputs ``state`` float32 (B, D), then uint8 (B, H, W, 3) per ``config.image_keys``
    ((B, N, H, W, 3) with a history of N frames), then int64 (B,) per ``config.category_keys`` (raw values, e.g.
    the route command); outputs ``action`` (B, A) and the rest of the head's (``head_outputs``: a gmm head's
    mixture, a chunk head's ``action_chunk`` (B, H, A) and its proposals); the batch axis is dynamic. State and pixel normalisation
    and the command's branch selection are in the graph (``ImagePolicy.outputs`` does them), so the model takes
    raw observations.
    """
    config = policy.config
    names = ["state", *config.image_keys, *config.category_keys]
    outputs = list(head_outputs(config.to_dict()))
    size = config.image_size
    frames = (config.history,) if config.history > 1 else ()
    example = (torch.zeros(2, config.state_dim),
               *[torch.zeros(2, *frames, size, size, 3, dtype=torch.uint8) for _ in config.image_keys],
               *[torch.full((2,), start, dtype=torch.int64) for start in config.category_starts])
    was_training = policy.training
    policy.eval()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter: the dynamo one needs onnxscript, which imitlab does not depend on.
            warnings.simplefilter("ignore", DeprecationWarning)
            # Lite0's strided slices cannot be constant-folded; harmless, the graph just keeps the Slice ops.
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(_AllOutputs(policy), example, str(path), input_names=names, output_names=outputs,
                              dynamic_axes={name: {0: "batch"} for name in [*names, *outputs]},
                              opset_version=OPSET, dynamo=False)
    finally:
        policy.train(was_training)
    onnx.checker.check_model(str(path))
    return Path(path)


def quantize_int8(fp32: Path, out: Path, calibration: Mapping[str, np.ndarray] | None, mode: str = "static") -> Path:
    """Write an int8 version of the ONNX model ``fp32`` to ``out``.

    ``calibration``: batched observations (same keys as the model inputs) whose activation ranges fix the
    static scheme's quantisation parameters; they should look like deployment inputs (env observations).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in INT8_MODES:
        raise ImitlabError(f"unknown int8 mode {mode!r}; choose one of {', '.join(INT8_MODES)}")
    if mode == "static" and calibration is None:
        raise ImitlabError("static int8 quantisation needs calibration observations")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = _batches(calibration, 16)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"  # shape inference + graph fusions, as the quantiser recommends
        quant_pre_process(str(fp32), str(prepared))
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        else:
            heavy = _weight_heavy_convs(onnx.load(str(prepared)))
            quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            op_types_to_quantize=["Conv"] if heavy else None, nodes_to_quantize=heavy or None)
    return Path(out)


def _weight_heavy_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the pointwise, ungrouped Conv nodes with at least ``INT8_MIN_WEIGHTS`` weights."""
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    heavy = []
    for node in model.graph.node:
        shape = shapes.get(node.input[1]) if node.op_type == "Conv" else None
        grouped = any(a.name == "group" and a.i != 1 for a in node.attribute)
        if shape is not None and shape[2:] == [1, 1] and not grouped and math.prod(shape) >= INT8_MIN_WEIGHTS:
            heavy.append(node.name)
    return heavy


def parity_error(policy: ImagePolicy | OnnxPolicy, onnx_policy: OnnxPolicy, observations: Mapping[str, np.ndarray]) -> float:
    """Largest absolute difference of any output (action, chunk, mixture) between a policy (torch, or another ONNX
    model) and the ONNX model on batched observations.

    NaN when either side gives a non-finite action anywhere: a model that outputs NaN fails any tolerance check
    (``nan <= tol`` is false), even where both sides agree on it.
    """
    worst = 0.0
    for batch in _batches(observations, 64):
        expected, actual = policy.predict_outputs(batch), onnx_policy.predict_outputs(batch)
        for name, value in expected.items():
            if not (np.isfinite(value).all() and np.isfinite(actual[name]).all()):
                return math.nan
            worst = max(worst, float(np.max(np.abs(value - actual[name]))))
    return worst


def _batches(observations: Mapping[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    n = len(observations["state"])
    for start in range(0, n, size):
        yield {k: np.ascontiguousarray(v[start:start + size]) for k, v in observations.items()}
