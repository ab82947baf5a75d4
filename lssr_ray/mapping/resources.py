"""How many actors of each kind a mapping run asks Ray for, and with which resources.

Pure functions from (engine, :class:`~lssr_ray.config.MapConfig`, :class:`ClusterResources`,
work size) to :class:`PoolSpec` (an autoscaling Ray Data actor pool ``min_size..max_size`` and
the per-actor CPU/GPU request). Nothing here looks at the GPUs of the driver's host.

GPU requests follow the **engine**, not what is visible when the driver starts: on a KubeRay
cluster whose GPU worker group starts at 0 replicas the driver sees 0 GPUs, and only actors that
*ask* for ``num_gpus=1`` make the autoscaler add a GPU pod. So

* ``tensorrt`` always asks for one GPU per actor (it never runs on CPU: with no GPU node the
  actors wait for one, and the stall watchdog reports it; a local run is refused in preflight);
* ``torch`` / ``onnxruntime`` (also what ``auto`` resolved to) ask for one when the cluster has
  GPUs now, when the cluster declares GPU nodes it can add (:data:`MAX_GPU_ACTORS_ENV`), or when
  the user asks for CUDA explicitly (:data:`ACTOR_GPUS_ENV` ``=1``; ``=0`` forces CPU);
* ``bicubic`` never asks for a GPU.

Pools autoscale between a small minimum (what the configuration asks for) and a maximum sized
from the cluster's CPUs/GPUs and the amount of work, so one read actor and one commit actor no
longer serve a whole state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lssr_ray.config import MapConfig
from lssr_ray.errors import ConfigError

ACTOR_GPUS_ENV = "LSSR_ACTOR_GPUS"
"""``1``: LSSR actors ask for one GPU each (CUDA asked for explicitly), ``0``: never; unset: from
the engine and the cluster (module docstring)."""
MAX_GPU_ACTORS_ENV = "LSSR_MAX_GPU_ACTORS"
"""GPU actors the cluster can grow to (its autoscaler's GPU worker count, e.g. the KubeRay GPU
group's ``maxReplicas`` x GPUs per pod); 0 / unset: the GPUs the cluster has now."""
GPU_ENGINES = ("tensorrt",)
"""Engines that only run on a GPU."""
CPU_ONLY_ENGINES = ("bicubic",)
"""Engines that never use a GPU."""
COMMIT_CPUS = 0.25
"""CPUs per commit actor (it only writes small partials)."""


@dataclass(frozen=True)
class ClusterResources:
    """What the Ray cluster offers (``ray.cluster_resources()``) and can grow to."""

    cpus: float
    gpus: float
    nodes: int = 1
    max_gpu_actors: int = 0
    """GPU actors the autoscaler may add room for (:data:`MAX_GPU_ACTORS_ENV`)."""
    actor_gpus: bool | None = None
    """:data:`ACTOR_GPUS_ENV` as a flag, None when unset."""

    @classmethod
    def from_ray(cls, env: Mapping[str, str] | None = None) -> ClusterResources:
        """The running Ray's totals, with the environment's declarations."""
        import ray

        res = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        return cls.with_env(float(res.get("CPU", 1)), float(res.get("GPU", 0)), max(1, nodes), env)

    @classmethod
    def with_env(cls, cpus: float, gpus: float, nodes: int = 1,
                 env: Mapping[str, str] | None = None) -> ClusterResources:
        env = os.environ if env is None else env
        raw_max, raw_gpus = env.get(MAX_GPU_ACTORS_ENV, "0").strip() or "0", env.get(ACTOR_GPUS_ENV, "").strip()
        if not raw_max.isdigit():
            raise ConfigError(f"{MAX_GPU_ACTORS_ENV}={raw_max!r}: give a whole number of GPU actors (0 = none)")
        if raw_gpus not in ("", "0", "1"):
            raise ConfigError(f"{ACTOR_GPUS_ENV}={raw_gpus!r}: give 1 (one GPU per LSSR actor) or 0 (CPU only)")
        return cls(cpus=cpus, gpus=gpus, nodes=nodes, max_gpu_actors=int(raw_max),
                   actor_gpus=None if raw_gpus == "" else raw_gpus == "1")


@dataclass(frozen=True)
class PoolSpec:
    """One Ray Data actor pool: autoscaling ``min_size..max_size`` actors, each reserving
    ``num_cpus`` CPUs and ``num_gpus`` GPUs."""

    min_size: int
    max_size: int
    num_cpus: float
    num_gpus: float = 0.0

    def map_batches_args(self) -> dict[str, Any]:
        """The ``compute`` / ``num_cpus`` / ``num_gpus`` arguments of ``Dataset.map_batches``."""
        import ray

        kw: dict[str, Any] = {"compute": ray.data.ActorPoolStrategy(min_size=self.min_size, max_size=self.max_size),
                              "num_cpus": self.num_cpus}
        if self.num_gpus:
            kw["num_gpus"] = self.num_gpus
        return kw


def actor_gpus(engine: str, cluster: ClusterResources) -> int:
    """GPUs each LSSR actor asks for (0 or 1) with the concrete ``engine`` on ``cluster``."""
    if engine in CPU_ONLY_ENGINES:
        return 0
    if engine in GPU_ENGINES:
        if cluster.actor_gpus is False:
            raise ConfigError(f"--engine {engine} runs only on a GPU, but {ACTOR_GPUS_ENV}=0 asks for CPU actors; "
                              "unset it or use --engine onnxruntime / torch")
        return 1
    if cluster.actor_gpus is not None:
        return int(cluster.actor_gpus)
    return 1 if cluster.gpus >= 1 or cluster.max_gpu_actors > 0 else 0


def _between(lo: int, hi: int) -> tuple[int, int]:
    lo = max(1, lo)
    return lo, max(lo, hi)


def infer_pools(engine: str, cfg: MapConfig, cluster: ClusterResources, n_items: int) -> dict[str, PoolSpec]:
    """Pools of stage 1 (``read``, ``infer``, ``commit``) for ``n_items`` read blocks."""
    gpus = actor_gpus(engine, cluster)
    chip_dates = max(1, n_items * cfg.block * cfg.block)
    calls = -(-chip_dates // stage1_batch_rows(cfg))  # LSSR / commit calls: one per read block or more blocks
    if cfg.num_actors:  # the user's fixed count
        infer = (cfg.num_actors, cfg.num_actors)
    elif gpus:  # one actor per GPU the cluster has or can add; at least one, so a GPU node is asked for
        infer = _between(1, min(calls, max(int(cluster.gpus), cluster.max_gpu_actors, 1)))
    else:  # CPU inference: the CPUs left after one reader per actor
        infer = _between(1, min(calls, int(cluster.cpus // (cfg.actor_cpus + cfg.read_cpus))))
    # readers: up to half the cluster's CPUs; committers: a quarter, at COMMIT_CPUS each
    read = _between(cfg.read_actors, min(n_items, int(cluster.cpus / 2 // cfg.read_cpus)))
    commit = _between(1, min(calls, int(cluster.cpus / 4 // COMMIT_CPUS), 64))
    return {"read": PoolSpec(*read, num_cpus=cfg.read_cpus),
            "infer": PoolSpec(*infer, num_cpus=cfg.actor_cpus, num_gpus=float(gpus)),
            "commit": PoolSpec(*commit, num_cpus=min(COMMIT_CPUS, cfg.read_cpus))}


def stage1_batch_rows(cfg: MapConfig) -> int:
    """Rows per call of the LSSR and commit stages: the chips of one read block (one read item
    makes one block of ``block`` x ``block`` rows), rounded up to whole model batches. Each read block then
    goes through each stage as one task and one call, so the driver handles one block and three
    tasks per read block rather than per model batch; the engines cut a call into model batches."""
    per_block = cfg.block * cfg.block
    return -(-per_block // cfg.batch_size) * cfg.batch_size


def blend_pool(cfg: MapConfig, cluster: ClusterResources, n_chunks: int) -> PoolSpec:
    """The stage-2 pool (blend and write): one actor per 16 chunks, up to three quarters of the CPUs."""
    return PoolSpec(*_between(1, min(n_chunks // 16, int(cluster.cpus * 0.75 // cfg.read_cpus))),
                    num_cpus=cfg.read_cpus)


def classify_pool(cfg: MapConfig, cluster: ClusterResources, n_chunks: int) -> PoolSpec:
    """The crop_type stage's pool: one actor per 16 chunks, each with ``cfg.actor_cpus`` (season
    features and LightGBM are CPU-bound), up to the whole cluster (it runs alone, after stage 2)."""
    return PoolSpec(*_between(1, min(n_chunks // 16, int(cluster.cpus // cfg.actor_cpus))), num_cpus=cfg.actor_cpus)


__all__ = ["ACTOR_GPUS_ENV", "MAX_GPU_ACTORS_ENV", "ClusterResources", "PoolSpec", "actor_gpus", "blend_pool",
           "classify_pool", "infer_pools", "stage1_batch_rows"]
