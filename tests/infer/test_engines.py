"""Engines on a tiny seeded torch model that follows the batch contract, exported to ONNX
(opset 17): torch vs onnxruntime parity, short-batch padding, the factory, TensorRT's extra."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from lssr_ray.errors import BatchError, ConfigError, MissingDataError, MissingExtraError
from lssr_ray.infer.base import Engine, pad_batch
from lssr_ray.infer.factory import make_engine, resolve_kind
from lssr_ray.infer.ort_engine import OrtEngine
from lssr_ray.infer.tensorrt_engine import contract_shapes, engine_cache_key
from lssr_ray.infer.torch_engine import TorchEngine

H = W = 8  # chip edge in input px -> 24 output px
ONNX_BATCH = 4
PARITY_ATOL = 1e-5


class TinySR(nn.Module):
    """Contract-following stand-in: upsample lr x3 and add a small aux/SAR/month residual.

    NaN in lr stays NaN in sr (the contract); present[:, k] gates aux input k.
    """

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=3, mode="bilinear", align_corners=False)
        self.body = nn.Sequential(
            nn.Conv2d(6 + 1 + 4 + 2, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 6, 3, padding=1)
        )
        self.lc = nn.Embedding(16, 4)
        self.month = nn.Linear(2, 6)

    def forward(self, lr, dem, landcover, sar, month, present):
        nan = torch.isnan(lr)
        up = self.up(torch.where(nan, torch.zeros_like(lr), lr))
        lc = self.lc(landcover[:, 0].clamp(0, 15)).permute(0, 3, 1, 2)
        aux = torch.cat(
            [
                torch.nan_to_num(dem) / 1000.0 * present[:, 0, None, None, None],
                lc * present[:, 1, None, None, None],
                torch.nan_to_num(sar) / 20.0 * present[:, 2, None, None, None],
            ],
            dim=1,
        )
        ang = month.float() * (2 * torch.pi / 12)
        m = self.month(torch.stack([torch.sin(ang), torch.cos(ang)], dim=1))[:, :, None, None]
        sr = up + 0.05 * torch.tanh(self.body(torch.cat([up, aux], dim=1)) + m)
        mask = self.up(nan.float()) > 0
        return torch.where(mask, torch.full_like(sr, float("nan")), sr)


def make_batch(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lr = rng.uniform(0.02, 0.5, (n, 6, H, W)).astype("float32")
    lr[0, :, 0, 0] = np.nan  # a nodata pixel
    return {
        "chip_id": np.array([f"r0000c{c:04d}" for c in range(n)]),
        "lr": lr,
        "dem": rng.uniform(0, 400, (n, 1, 3 * H, 3 * W)).astype("float32"),
        "landcover": rng.integers(0, 12, (n, 1, 3 * H, 3 * W)).astype("int64"),
        "sar": rng.uniform(-25, -5, (n, 2, 3 * H, 3 * W)).astype("float32"),
        "month": rng.integers(1, 13, (n,)).astype("int64"),
        "present": np.ones((n, 3), "float32"),
    }


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinySR().eval()


def _export(model, path, *, dynamic: bool):
    b = make_batch(ONNX_BATCH)
    names = ["lr", "dem", "landcover", "sar", "month", "present"]
    args = tuple(torch.from_numpy(b[k]) for k in names)
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=names,
        output_names=["sr"],
        opset_version=17,
        dynamo=False,  # the dynamo exporter needs onnxscript, which the stack does not install
        dynamic_axes={k: {0: "batch"} for k in [*names, "sr"]} if dynamic else None,
    )
    return path


@pytest.fixture(scope="module")
def onnx_fixed(model, tmp_path_factory):
    return _export(model, tmp_path_factory.mktemp("onnx") / "tiny_b4.onnx", dynamic=False)


@pytest.fixture(scope="module")
def onnx_dynamic(model, tmp_path_factory):
    return _export(model, tmp_path_factory.mktemp("onnx") / "tiny_dyn.onnx", dynamic=True)


def reference(model, batch):
    """Plain torch forward, no engine code involved."""
    with torch.no_grad():
        names = ["lr", "dem", "landcover", "sar", "month", "present"]
        return model(*(torch.from_numpy(batch[k]) for k in names)).numpy()


def test_torch_engine_matches_reference(model):
    eng = make_engine("torch", torch_module=model, batch_size=3, chip_shape=(H, W))
    assert isinstance(eng, TorchEngine) and isinstance(eng, Engine) and eng.name == "torch"
    batch = make_batch(7)
    out = eng(batch)
    assert isinstance(out, np.ndarray) and out.shape == (7, 6, 3 * H, 3 * W) and out.dtype == np.float32
    ref = reference(model, batch)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert np.isnan(out[0, :, :3, :3]).all() and np.isfinite(out[1:]).all()


def test_ort_parity_and_padding_fixed_batch(model, onnx_fixed):
    eng = make_engine("onnxruntime", onnx_path=onnx_fixed, intra_op_threads=1)
    assert isinstance(eng, OrtEngine) and eng.name == "onnxruntime"
    assert eng.batch_size == ONNX_BATCH and eng.fixed_batch == ONNX_BATCH and eng.pad
    assert eng.chip_shape == (H, W) and eng.intra_op_threads == 1
    assert eng.providers == ["CPUExecutionProvider"]
    for n in (ONNX_BATCH, 6, 1):  # exact, split + short last batch padded, single short batch
        batch = make_batch(n, seed=n)
        got = eng(batch)
        ref = reference(model, batch)
        assert got.shape == ref.shape
        diff = np.nanmax(np.abs(got - ref))
        print(f"torch vs onnxruntime, B={n}: max abs diff {diff:.2e}")
        assert diff < PARITY_ATOL
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    with pytest.raises(ConfigError, match="fixed batch of 4"):
        OrtEngine(onnx_fixed, batch_size=8)
    with pytest.raises(BatchError, match="exported for"):
        eng(make_batch(2) | {"lr": np.zeros((2, 6, H + 1, W + 1), "float32")})


def test_ort_dynamic_batch_and_torch_parity(model, onnx_dynamic):
    eng = OrtEngine(onnx_dynamic, batch_size=5, intra_op_threads=1)
    assert eng.fixed_batch is None and eng.batch_size == 5 and not eng.pad
    batch = make_batch(7, seed=3)
    t = TorchEngine(model, batch_size=7)(batch)
    o = eng(batch)
    assert np.nanmax(np.abs(o - t)) < PARITY_ATOL


def test_pad_batch_repeats_last_row():
    arrays = {"a": np.arange(6).reshape(3, 2), "m": np.array([1, 2, 3])}
    padded, n = pad_batch(arrays, 5)
    assert n == 3
    np.testing.assert_array_equal(padded["a"], [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
    np.testing.assert_array_equal(padded["m"], [1, 2, 3, 3, 3])


def test_bad_inputs_named(model, onnx_fixed, tmp_path):
    eng = make_engine("torch", torch_module=model)
    batch = make_batch(2)
    del batch["sar"]
    with pytest.raises(BatchError, match="sar"):
        eng(batch)
    with pytest.raises(BatchError, match="leading"):
        eng(make_batch(2) | {"month": np.array([1, 2, 3])})
    with pytest.raises(ConfigError, match="onnxruntime"):
        make_engine("tflite", onnx_path=onnx_fixed)
    with pytest.raises(ConfigError, match="onnx_path"):
        make_engine("onnxruntime")
    with pytest.raises(MissingDataError, match="not found"):
        make_engine("onnxruntime", onnx_path=tmp_path / "nope.onnx")
    with pytest.raises(ConfigError, match="not available"):
        OrtEngine(onnx_fixed, providers=["CUDAExecutionProvider"])


def test_auto_kind_on_this_host(model, onnx_fixed):
    has_trt = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
    assert resolve_kind("auto") == ("tensorrt" if has_trt else "onnxruntime")
    assert resolve_kind("auto", with_graph=False) == "torch"
    assert make_engine("auto", torch_module=model).name == "torch"  # no graph: torch
    if not has_trt:
        assert make_engine("auto", onnx_path=onnx_fixed, torch_module=model).name == "onnxruntime"


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_tensorrt_missing_extra(onnx_fixed):
    with pytest.raises(MissingExtraError, match=r"lssr-ray\[gpu\]"):
        make_engine("tensorrt", onnx_path=onnx_fixed)


def test_tensorrt_cache_key_and_shapes():
    shapes = contract_shapes(
        {
            "lr": ["batch", 6, 64, 64],
            "dem": [None, 1, None, None],
            "month": [None],
            "present": [0, 3],
        },
        batch_size=8,
        chip_shape=(64, 64),
    )
    assert shapes == {
        "lr": (8, 6, 64, 64),
        "dem": (8, 1, 192, 192),
        "month": (8,),
        "present": (8, 3),
    }
    k = engine_cache_key("sha-a", shapes, gpu_name="NVIDIA H100", trt_version="10.3.0")
    assert len(k) == 64
    assert k == engine_cache_key(
        "sha-a", dict(reversed(list(shapes.items()))), gpu_name="NVIDIA H100", trt_version="10.3.0"
    )
    for changed in (
        engine_cache_key("sha-b", shapes, gpu_name="NVIDIA H100", trt_version="10.3.0"),
        engine_cache_key(
            "sha-a", shapes | {"lr": (4, 6, 64, 64)}, gpu_name="NVIDIA H100", trt_version="10.3.0"
        ),
        engine_cache_key("sha-a", shapes, gpu_name="NVIDIA A10G", trt_version="10.3.0"),
        engine_cache_key("sha-a", shapes, gpu_name="NVIDIA H100", trt_version="10.4.0"),
        engine_cache_key("sha-a", shapes, gpu_name="NVIDIA H100", trt_version="10.3.0", precision="bf16"),
    ):
        assert changed != k


def test_bicubic_engine_is_the_untrained_baselines_bicubic():
    """The model-free engine gives what the residual CNN gives at init (its bicubic x3, clamped):
    two owners of "bicubic" that must agree; 'auto' never picks it."""
    from lssr_ray.model.baseline import ResidualCNN

    batch = make_batch(5, seed=3)
    batch["lr"] = np.clip(np.nan_to_num(batch["lr"]) * 2 - 1, -1, 1).astype(np.float32)  # image range
    eng = make_engine("bicubic", batch_size=2, chip_shape=(H, W))
    assert isinstance(eng, Engine) and eng.name == "bicubic"
    sr = eng(batch)
    assert sr.shape == (5, 6, 3 * H, 3 * W) and sr.dtype == np.float32
    with torch.no_grad():
        want = ResidualCNN().eval()(torch.from_numpy(batch["lr"])).numpy()
    np.testing.assert_allclose(sr, want, atol=1e-6)
    assert resolve_kind("auto") != "bicubic" and resolve_kind("auto", with_graph=False) != "bicubic"


def test_precision_setting_reads_the_same_for_inference_and_training(caplog):
    """One reading of ``precision``: reduced types only on CUDA, float32 on CPU (with a word when
    a reduced type was asked there), unknown values refused."""
    import torch

    from lssr_ray.infer.torch_engine import reduced_precision
    from lssr_ray.train.loop import _autocast

    assert reduced_precision("cuda", "bf16") is torch.bfloat16
    assert reduced_precision("cuda", "fp16") is torch.float16
    assert reduced_precision("cuda", "fp32") is None
    assert all(reduced_precision("cpu", p) is None for p in ("auto", "fp32", "bf16", "fp16"))
    with pytest.raises(ConfigError, match="fp8"):
        reduced_precision("cuda", "fp8")
    ctx, scaler = _autocast("cpu", "fp16")
    assert scaler is None and not isinstance(ctx, torch.autocast)

    model = lambda **kw: torch.nn.functional.interpolate(kw["lr"], scale_factor=3)
    with caplog.at_level("WARNING"):
        eng = make_engine("torch", torch_module=model, precision="fp16", chip_shape=(4, 4))
    assert eng.dtype is None and "runs in float32" in caplog.text
    lr = np.random.default_rng(0).uniform(-1, 1, (2, 6, 4, 4)).astype(np.float32)
    out = eng({"lr": lr, "dem": np.zeros((2, 2, 12, 12), np.float32), "landcover": np.zeros((2, 1, 12, 12), np.int64),
               "sar": np.zeros((2, 2, 12, 12), np.float32), "month": np.ones(2, np.int64),
               "present": np.ones((2, 3), np.float32)})
    assert out.dtype == np.float32 and np.array_equal(out, np.repeat(np.repeat(lr, 3, 2), 3, 3))
    with pytest.raises(ConfigError, match="precision"):
        make_engine("torch", torch_module=model, precision="half")
