"""SRCNN (Dong et al., ECCV 2014 / TPAMI 2016) baseline.

Single channel: the network maps the Y channel (in [0,1]) of the *bicubic-upscaled*
image to a restored Y. Layout of the official MATLAB weights (`SRCNN_v1` release):
kernels stored column-major, applied by `imfilter(..., 'same', 'replicate')`, i.e.
correlation (= conv2d) with replicate borders, so we pad explicitly and convolve
unpadded; the output keeps the input size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import rgb2ycbcr, ycbcr2rgb
from .resize import imresize


class SRCNN(nn.Module):
    def __init__(self, f1: int = 9, f2: int = 1, f3: int = 5, n1: int = 64, n2: int = 32):
        super().__init__()
        self.config = {"arch": "srcnn", "f1": f1, "f2": f2, "f3": f3, "n1": n1, "n2": n2}
        self.conv1 = nn.Conv2d(1, n1, f1)
        self.conv2 = nn.Conv2d(n1, n2, f2)
        self.conv3 = nn.Conv2d(n2, 1, f3)

    @staticmethod
    def _pad(x: torch.Tensor, k: int) -> torch.Tensor:
        p = k // 2
        return F.pad(x, (p, p, p, p), mode="replicate") if p else x

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) bicubic-upscaled Y in [0,1] -> restored Y, same size (not clamped)."""
        x = F.relu(self.conv1(self._pad(y, self.conv1.kernel_size[0])))
        x = F.relu(self.conv2(self._pad(x, self.conv2.kernel_size[0])))
        return self.conv3(self._pad(x, self.conv3.kernel_size[0]))


def load_srcnn_mat(path: str | Path) -> SRCNN:
    """Build an SRCNN from an official MATLAB `.mat` file (9-1-5, 9-3-5 or 9-5-5)."""
    import scipy.io  # scipy is only needed for the official weights

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SRCNN weights not found: {path}")
    try:
        m = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for non-.mat input
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({e})") from e
    need = ["weights_conv1", "biases_conv1", "weights_conv2", "biases_conv2", "weights_conv3", "biases_conv3"]
    missing = [k for k in need if k not in m]
    if missing:
        raise ValueError(f"{path}: not an SRCNN weight file, missing arrays {missing}")
    w1, w2, w3 = m["weights_conv1"], m["weights_conv2"], m["weights_conv3"]
    f1 = int(round(np.sqrt(w1.shape[0])))
    n1 = w1.shape[1]
    if w2.ndim == 2:  # 1x1 conv2 is saved as (in, out)
        w2 = w2[:, None, :]
    f2 = int(round(np.sqrt(w2.shape[1])))
    n2 = w2.shape[2]
    f3 = int(round(np.sqrt(w3.shape[1])))
    net = SRCNN(f1, f2, f3, n1, n2)
    k1 = np.stack([w1[:, o].reshape(f1, f1, order="F") for o in range(n1)])[:, None]
    k2 = np.stack([np.stack([w2[i, :, o].reshape(f2, f2, order="F") for i in range(n1)]) for o in range(n2)])
    k3 = np.stack([w3[i, :].reshape(f3, f3, order="F") for i in range(n2)])[None]
    with torch.no_grad():
        for conv, k, b in ((net.conv1, k1, "biases_conv1"), (net.conv2, k2, "biases_conv2"), (net.conv3, k3, "biases_conv3")):
            conv.weight.copy_(torch.from_numpy(k.astype(np.float32)))
            conv.bias.copy_(torch.from_numpy(m[b].reshape(-1).astype(np.float32)))
    return net.eval()


@torch.no_grad()
def srcnn_upscale(net: SRCNN, lr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Official SRCNN protocol on an (H, W[, C]) LR image, uint8 or float in [0,1].

    Y is bicubic-upscaled (MATLAB imresize, float), restored by the network and
    quantised to uint8; Cb/Cr come from the bicubic upscale. Returns (rgb_uint8,
    y_uint8); a one-channel input returns a one-channel image for both.
    """
    lr = lr[..., None] if lr.ndim == 2 else lr
    lr01 = lr.astype(np.float64) / 255.0 if lr.dtype == np.uint8 else lr.astype(np.float64)
    if lr.shape[-1] == 1:
        ycc = lr01
    else:
        ycc = rgb2ycbcr(lr01)
    up = imresize(ycc, scale)  # float, all channels
    y_in = torch.from_numpy(up[..., 0]).float()[None, None]
    p = next(net.parameters())
    y = net(y_in.to(p.device, p.dtype)).double().cpu().numpy()[0, 0]
    y8 = np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)
    if lr.shape[-1] == 1:
        return y8[..., None], y8
    ycc_out = up.copy()
    ycc_out[..., 0] = y8 / 255.0
    rgb = np.clip(np.round(ycbcr2rgb(ycc_out) * 255.0), 0, 255).astype(np.uint8)
    return rgb, y8
