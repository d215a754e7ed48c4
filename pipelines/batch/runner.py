"""The job: the driver checks the model once, lists the input and holds the output's lock, then runs Ray
Data either staged (read tasks -> inference actors -> write tasks: archives spread over the pool, shards,
GPU actors) or fused (each CPU actor reads, infers and writes its own loose files, cheaper than pixels
through the object store: benchmarks/bench_batch.py); ``engine="local"`` runs the same steps in a loop."""
from __future__ import annotations

import contextlib
import sys
import time

from .. import output_lock, storage
from .files import filesystem
from .keys import output_key
from .rows import records
from .settings import BatchSpec
from .sinks import prepare_output, write_rows
from .sources import plan, read_rows
from .summary import Summary, finish
from .workers import FusedWorker, Predictor, process


def _checkpoint_bytes(spec: BatchSpec) -> bytes:
    from ..modelref import checked_bytes

    if spec.model.startswith("models:/") and spec.require_promoted:
        from ..promote import unservable

        why = unservable(spec.model)
        if why:
            raise ValueError(f"--model {spec.model}: {why}; batch jobs serve promoted versions only "
                             f"(`perceptual promote NAME`, or --allow-unpromoted for a trial run)")
    return checked_bytes(spec.model, spec.kind, spec.scale)[0]  # fail here, once, not in every actor


def run_batch(spec: BatchSpec, *, engine: str = "ray", progress: bool = True) -> Summary:
    """Run one batch job. engine: "ray" (Ray Data, local instance or RAY_ADDRESS) or "local" (a plain
    loop in this process, the same per-image functions)."""
    spec.check()
    ckpt = _checkpoint_bytes(spec)
    try:
        items, refused = plan(spec)
    except FileNotFoundError:
        raise
    except OSError as e:  # access denied, a missing bucket, an unreachable endpoint: one line naming the input
        raise ValueError(f"--input {spec.input}: {storage.describe_error(e)}") from None
    fs, root = filesystem(spec.output, spec.endpoint)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(output_lock.hold(fs, root, f"{spec.kind} --model {spec.model} --input {spec.input}",
                                                spec.output))
        except OSError as e:  # the output cannot even be written: say why in one line
            raise ValueError(f"--output {spec.output}: {storage.describe_error(e)}") from None
        return _run_locked(spec, ckpt, items, refused, engine, progress)


def _run_locked(spec: BatchSpec, ckpt: bytes, items: list[dict], refused: list, engine: str, progress: bool):
    """The job itself, with the output's lock held (`pipelines/output_lock.py`)."""
    present, old_shards = prepare_output(spec)
    done = set() if spec.overwrite else present
    summary = Summary(failures=list(refused), failed=len(refused))
    todo = []
    for it in items:  # loose files already written are skipped here; archive members in the tasks
        if it["kind"] == "file" and output_key(it["key"], spec.fmt) in done and not spec.overwrite:
            summary.skipped += 1
        else:
            todo.append(it)
    t0, summary.started = time.perf_counter(), time.time()
    results = _run_local(spec, ckpt, todo, done, progress) if engine == "local" else _run_ray(spec, ckpt, todo, done)
    for r in results:
        summary.add(r)
    summary.seconds = time.perf_counter() - t0
    if spec.overwrite and old_shards:  # replaced by this run's shards; removed only once it finished
        fs, root = filesystem(spec.output, spec.endpoint)
        for name in old_shards:
            fs.delete_file(f"{root}/{name}")
    finish(spec, summary)
    return summary


def _run_local(spec, ckpt, todo, done, progress):
    from tqdm import tqdm

    pred = Predictor(spec, ckpt)
    with tqdm(total=len(todo), unit="src", file=sys.stderr, disable=not progress, desc=spec.kind) as bar:
        yield from process(pred, todo, spec, done, bar)


def fused(spec: BatchSpec, todo: list[dict], cpus: float | None = None) -> bool:
    """Whether the job runs the fused pipeline (module doc): loose files on CPU actors that leave
    no room (``read_cpus``) beside them on the ``cpus`` of the cluster for read and write tasks;
    where there is room, staged decodes and encodes there while the actors infer."""
    if spec.pipeline != "auto":
        return spec.pipeline == "fused"
    if spec.gpus_per_actor or spec.output_archive or any(it["kind"] != "file" for it in todo):
        return False
    return cpus is None or spec.actors * spec.cpus_per_actor + spec.read_cpus > cpus


def _run_ray(spec, ckpt, todo, done):
    import ray

    from ..ray_env import ray_session

    if not todo:
        return
    with ray_session():
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = False
        done_ref = [ray.put(frozenset(done))] if done else None
        threads = max(1, int(spec.cpus_per_actor))
        if fused(spec, todo, ray.cluster_resources().get("CPU", 0)):  # no read/write tasks: actors take every CPU
            # a few files per call: Ray's per-call cost (about 15 ms here) shrinks, the pool stays balanced
            per_call = max(1, min(2, len(todo) // (8 * spec.actors)))
            ds = ray.data.from_items(todo, override_num_blocks=-(-len(todo) // per_call))
            ds = ds.map_batches(FusedWorker, fn_constructor_kwargs=dict(spec=spec, checkpoint=[ray.put(ckpt)],
                                                                        threads=threads, done_ref=done_ref),
                                batch_size=per_call, batch_format="numpy", num_cpus=spec.cpus_per_actor,
                                compute=ray.data.ActorPoolStrategy(size=spec.actors))
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                yield from records(batch)
            return
        ds = ray.data.from_items(todo, override_num_blocks=min(len(todo), 200))
        # One archive per read task (each is a stream). Loose files: 8 per task for one actor (fewer
        # tasks); 2 for a pool, so blocks spread evenly over the actors (measured: bench_batch.py).
        read_batch = 1 if any(it["kind"] != "file" for it in todo) else 8 if spec.actors == 1 else 2
        ds = ds.map_batches(_read_stage, fn_kwargs=dict(spec=spec, done_ref=done_ref), batch_size=read_batch,
                            batch_format="pandas", num_cpus=spec.read_cpus)
        ds = ds.map_batches(Predictor, fn_constructor_kwargs=dict(spec=spec, checkpoint=[ray.put(ckpt)], threads=threads),
                            batch_size=1, batch_format="pandas", num_cpus=spec.cpus_per_actor,
                            num_gpus=spec.gpus_per_actor or None,
                            compute=ray.data.ActorPoolStrategy(size=spec.actors))
        ds = ds.map_batches(_write_stage, fn_kwargs=dict(spec=spec), batch_format="pandas", num_cpus=spec.read_cpus,
                            batch_size=spec.shard_size if spec.output_archive else 4)
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            yield from batch.to_dict("records")


def _read_stage(batch, spec: BatchSpec, done_ref):
    """Ray Data generator: source rows -> one decoded row per image (a DataFrame each)."""
    import pandas as pd
    import ray

    done = ray.get(done_ref[0]) if done_ref else frozenset()
    for item in batch.to_dict("records"):
        for row in read_rows(item, spec, done):
            yield pd.DataFrame([row])


def _write_stage(batch, spec: BatchSpec):
    import pandas as pd

    return pd.DataFrame(write_rows(batch.to_dict("records"), spec))
