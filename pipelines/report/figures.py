"""The report's plots, as PNG bytes the page inlines: each judged version's training loss read back
from MLflow, and the scheduled runs' trends over the history. matplotlib is imported only here.
"""
from __future__ import annotations

import io

from ..log import get


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def loss_curves(versions: dict) -> bytes | None:
    """Training loss_total (log scale) of each judged model version, read back from MLflow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow import MlflowClient

    from .. import tracking

    client = MlflowClient(tracking.tracking_uri())
    curves = {}
    for name, v in sorted(versions.items()):
        if not v.get("run_id"):
            continue
        try:
            hist = client.get_metric_history(v["run_id"], "loss_total")
        except Exception as e:  # a run deleted since: the report says so instead of failing
            get(__name__).warning(f"report: no loss curve for {name} v{v['version']}: {e}")
            continue
        if hist:
            pts = sorted((m.step, m.value) for m in hist)
            curves[f"{name} v{v['version']}"] = pts
    if not curves:
        return None
    n = len(curves)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3 * rows), squeeze=False)
    for ax, (label, pts) in zip(axes.flat, curves.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("training loss_total (MLflow)")
    return _png(fig)


def trend_plot(history, keys: list[str]) -> bytes | None:
    """One line per metric key over the scheduled runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if history is None or history.empty:
        return None
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.8 * len(groups)), squeeze=False)
    for ax, (metric, ks) in zip(axes[:, 0], groups.items()):
        for k in ks:
            h = history[history["metric"] == k].sort_values("time")
            ax.plot(h["time"], h["value"], marker="o", label=k.rsplit(".", 1)[0])
        ax.set_title(metric, fontsize=9)
        ax.legend(fontsize=7)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
    fig.suptitle(f"scheduled runs: {history['run'].nunique()} in the history")
    return _png(fig)
