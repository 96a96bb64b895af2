"""The ``ray`` engine: Ray Data reads the shards, an actor pool annotates and writes them.

Each shard is one row: a read task (a ``Datasource``, run wherever Ray schedules it) reads
the shard's documents into that row, and ``map_batches`` hands rows one at a time to a
callable class that builds the pipeline once per actor and writes the shard's files. One row
per shard keeps a shard's documents together whatever Ray does with blocks, so the shard
files stay all-or-nothing. Ray restarts an actor that dies (a killed process, an OOM) and
retries its shard; the done records make a rerun of the whole job skip finished shards.

Ray is imported here only: the rest of the package runs without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import srsly

try:
    import pyarrow as pa
    import ray
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        'the ray engine needs Ray Data: pip install "spacy-reasoningner[ray]" '
        '(or pip install "ray[data]")'
    ) from error

from .sources import Item, Shard, read_shard
from .worker import ShardAnnotator, ShardFailed, ShardJob


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run.

    address: an existing cluster (``ray://host:10001``, ``auto``); None uses ``RAY_ADDRESS``
        when set, else starts a local Ray on this machine.
    actors: size of the actor pool, each actor holding one pipeline (one model).
    gpus_per_actor, cpus_per_actor: Ray resources each actor reserves (a vLLM actor per GPU:
        gpus_per_actor=1; an OpenAI-compatible backend needs no GPU).
    """

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if self.gpus_per_actor < 0 or self.cpus_per_actor <= 0:
            raise ValueError("gpus_per_actor must be >= 0 and cpus_per_actor > 0")


class ShardSource(Datasource):
    """One read task, one block and one row per shard: ``{"shard", "items"}``."""

    def __init__(self, shards: list[Shard]):
        super().__init__()
        self.shards = shards

    def estimate_inmemory_data_size(self) -> int:
        return sum(s.end - s.start for s in self.shards if s.format != "docbin") or 0

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, **_: Any):
        return [
            ReadTask(
                _reader(shard),
                BlockMetadata(
                    num_rows=1, size_bytes=None, exec_stats=None, input_files=[shard.path]
                ),
            )
            for shard in self.shards
        ]


def _reader(shard: Shard) -> Callable[[], Iterable[pa.Table]]:
    def read() -> Iterable[pa.Table]:
        items = srsly.msgpack_dumps([item.to_dict() for item in read_shard(shard)])
        yield pa.table({"shard": [srsly.json_dumps(shard.to_dict())], "items": [items]})

    return read


class RayShardAnnotator:
    """The map_batches callable: one pipeline per actor, one shard per call."""

    def __init__(self, job: ShardJob):
        self.annotate = ShardAnnotator(job)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """One row per shard in, one row out: the shard, and why it failed or "" (Ray would
        turn a raised ShardFailed into an exception type the driver cannot tell apart). Its
        result is its done record, which the driver reads from the output folder."""
        rows: dict[str, list[str]] = {"shard": [], "failed": []}
        for shard_json, items_bytes in zip(batch["shard"], batch["items"], strict=True):
            shard = Shard.from_dict(srsly.json_loads(shard_json))
            items = [Item(**i) for i in srsly.msgpack_loads(items_bytes)]
            try:
                self.annotate(shard, items)
                failed = ""
            except ShardFailed as error:
                failed = str(error)
            rows["shard"].append(shard.id)
            rows["failed"].append(failed)
        return rows


def connect(options: RayOptions) -> None:
    """Join the cluster the options name, or start a local one (dashboard off)."""
    if ray.is_initialized():
        return
    address = options.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:  # a cluster of this machine only: its node address is loopback
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1")


def run(shards: list[Shard], job: ShardJob, options: RayOptions) -> None:
    """Annotate ``shards`` on the cluster (each shard's done record is its result)."""
    connect(options)
    # Reads take no CPU from the actors (a fixed pool holding every CPU would starve them)
    # and run `actors` at a time: a shard is read in a blink, each worker process imports spaCy.
    dataset = ray.data.read_datasource(
        ShardSource(shards), override_num_blocks=len(shards), num_cpus=0, concurrency=options.actors
    ).map_batches(
        RayShardAnnotator,
        fn_constructor_kwargs={"job": job},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=options.actors),
        num_cpus=options.cpus_per_actor,
        num_gpus=options.gpus_per_actor or None,
    )
    for row in dataset.iter_rows():
        if row["failed"]:
            raise ShardFailed(row["failed"])  # leaving the loop stops the job
