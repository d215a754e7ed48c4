"""MLflow's python_function flavor for registered versions, with nothing pickled.

Each registered version carries two flavors: `pytorch` (the pt2 export) and `python_function`,
whose `loader_module` is this module and whose data is the tensor-only project checkpoint logged
beside the export. `mlflow.pyfunc.load_model("models:/style-la_muse@champion")` and
`mlflow models serve` (with this project installed, e.g. `--env-manager local`) call
`_load_pyfunc(checkpoint)`, which rebuilds the network from the checkpoint's config with
`torch.load(weights_only=True)`: no project class is ever unpickled.

Input: float32 images in [0, 1], shape (N, C, H, W) of any size (C = 3; 1 for SRCNN's Y
channel); output: the network's images, same layout, clamped to [0, 1].
"""
from __future__ import annotations

import numpy as np


class PerceptualPyfunc:
    def __init__(self, checkpoint: str):
        import torch

        from perceptual_core.checkpoint import load_model

        self.model = load_model(checkpoint, "cpu")
        self.torch = torch

    def predict(self, model_input, params=None):
        x = model_input
        if hasattr(x, "to_numpy"):  # a DataFrame of one tensor column
            x = np.stack(x.iloc[:, 0].to_list())
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got {x.shape}")
        with self.torch.inference_mode():
            y = self.model(self.torch.from_numpy(np.ascontiguousarray(x))).clamp(0, 1)
        return y.numpy()


def _load_pyfunc(data_path: str) -> PerceptualPyfunc:
    return PerceptualPyfunc(data_path)
