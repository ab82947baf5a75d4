"""Cluster-correct scheduling (issue 14, part 1): GPU requests follow the engine, actor pools
autoscale with the cluster, a local ``--out`` must be one storage for every node, and worker
errors reach the driver's output (``ray job logs``)."""

from __future__ import annotations

import time
import uuid

import pytest

from lssr_ray.config import REPO_ROOT, MapConfig
from lssr_ray.errors import ConfigError, StoreError
from lssr_ray.mapping.output_target import check_out_shared, refuse_unshared_out, unseen_by
from lssr_ray.mapping.resources import (
    ClusterResources,
    actor_gpus,
    blend_pool,
    infer_pools,
    stage1_batch_rows,
)

CFG = MapConfig(aoi=str(REPO_ROOT / "examples" / "flanders_31UDS.geojson"))


def cluster(cpus: float, gpus: float = 0, **env: str) -> ClusterResources:
    return ClusterResources.with_env(cpus, gpus, env=env)


def test_tensorrt_asks_for_a_gpu_on_a_cluster_with_none_visible():
    """The KubeRay GPU group starts at 0 replicas: only an actor that asks for a GPU gets one added."""
    pools = infer_pools("tensorrt", CFG, cluster(8, 0), n_items=100)
    assert pools["infer"].num_gpus == 1
    assert pools["infer"].min_size == 1
    assert pools["infer"].map_batches_args()["num_gpus"] == 1


def test_tensorrt_never_forced_onto_cpu():
    with pytest.raises(ConfigError, match="runs only on a GPU"):
        actor_gpus("tensorrt", cluster(8, 0, LSSR_ACTOR_GPUS="0"))


@pytest.mark.parametrize(("engine", "res", "gpus", "max_size"), [
    ("onnxruntime", cluster(8, 0), 0, 5),                             # CPU cluster: CPU actors, 8 // 1.5
    ("onnxruntime", cluster(32, 4), 1, 4),                            # GPUs there: one actor per GPU
    ("torch", cluster(8, 0, LSSR_MAX_GPU_ACTORS="6"), 1, 6),          # GPU nodes the autoscaler can add
    ("torch", cluster(8, 0, LSSR_ACTOR_GPUS="1"), 1, 1),              # CUDA asked for explicitly
    ("onnxruntime", cluster(32, 4, LSSR_ACTOR_GPUS="0"), 0, 21),      # CPU forced
    ("bicubic", cluster(32, 4), 0, 21),                               # no model, never a GPU
])
def test_infer_pool_follows_engine_and_cluster(engine, res, gpus, max_size):
    spec = infer_pools(engine, CFG, res, n_items=1000)["infer"]
    assert (spec.num_gpus, spec.min_size, spec.max_size) == (gpus, 1, max_size)
    assert ("num_gpus" in spec.map_batches_args()) == bool(gpus)


def test_pools_autoscale_with_cluster_size_and_work():
    small, big = infer_pools("bicubic", CFG, cluster(2), 1000), infer_pools("bicubic", CFG, cluster(64), 1000)
    for name in ("read", "infer", "commit"):
        assert small[name].min_size >= 1 and small[name].max_size >= small[name].min_size
        assert big[name].max_size > small[name].max_size, name
    assert (big["read"].max_size, big["commit"].max_size) == (64, 64)
    tiny = infer_pools("bicubic", CFG, cluster(64), 1)  # one read block: no idle pool of 64 readers
    assert tiny["read"].max_size == 1 and tiny["infer"].max_size == 1
    compute = big["read"].map_batches_args()["compute"]
    assert (compute.min_size, compute.max_size) == (1, 64)
    assert blend_pool(CFG, cluster(64), 16 * 100).max_size == 96 and blend_pool(CFG, cluster(2), 3).max_size == 1


@pytest.mark.parametrize(("block", "batch_size", "rows"), [
    (2, 4, 4),    # one read block is one model batch
    (4, 4, 16),   # a larger read block goes through as one call of four model batches
    (8, 32, 64),  # the default block on a GPU batch of 32: two model batches per call
    (3, 4, 12),   # 9 chips rounded up to whole model batches
    (1, 8, 8),    # a GPU batch larger than a block: several blocks per call
])
def test_stage1_calls_hold_whole_read_blocks(block, batch_size, rows):
    cfg = MapConfig(aoi=CFG.aoi, block=block, batch_size=batch_size)
    assert stage1_batch_rows(cfg) == rows
    assert rows % batch_size == 0 and rows >= block * block


def test_num_actors_pins_the_inference_pool():
    spec = infer_pools("tensorrt", MapConfig(aoi=CFG.aoi, num_actors=3), cluster(8, 0), 100)["infer"]
    assert (spec.min_size, spec.max_size, spec.num_gpus) == (3, 3, 1)


@pytest.mark.parametrize("env", [{"LSSR_MAX_GPU_ACTORS": "many"}, {"LSSR_ACTOR_GPUS": "yes"}])
def test_bad_scheduling_env_is_one_clear_error(env):
    with pytest.raises(ConfigError, match="LSSR_"):
        cluster(8, 0, **env)


def test_unshared_out_is_refused_naming_the_path():
    assert unseen_by("t", {"a": "t", "b": None, "c": "x"}) == ["b", "c"]
    refuse_unshared_out("/data/out.zarr", "t", {"a": "t"})
    with pytest.raises(StoreError, match=r"--out /data/out.zarr is a local path that 1 of .* 2 node\(s\) cannot see"):
        refuse_unshared_out("/data/out.zarr", "t", {"a": "t", "b": None})


def test_shared_out_check_reads_the_marker_on_the_other_node_of_a_real_two_node_cluster(tmp_path):
    """Two raylets on this machine (ray.cluster_utils.Cluster): the pinned task runs on the other
    node and reads the driver's marker; the marker is removed afterwards."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        other = c.add_node(num_cpus=1)
        ray.init(address=c.address)
        c.wait_for_nodes()
        answers = check_out_shared(str(tmp_path))
        assert list(answers) == [other.node_id]
        assert len(next(iter(answers.values()))) == 32  # the uuid4 token the driver wrote
        assert list(tmp_path.iterdir()) == []
        assert check_out_shared("s3://bucket/out.zarr") == {}
    finally:
        ray.shutdown()
        c.shutdown()


def test_worker_errors_reach_the_driver_output(capfd):
    """The Ray a mapping run starts prints its workers' errors in the driver's output, what
    ``ray job logs`` shows (log_to_driver)."""
    import ray

    from lssr_ray.mapping.ray_env import init_ray

    marker = f"planted-worker-failure-{uuid.uuid4().hex[:8]}"

    def fail() -> None:
        import logging

        try:
            raise RuntimeError(marker)
        except RuntimeError:
            logging.getLogger("lssr_ray.worker").exception("chip read failed")

    if ray.is_initialized():
        ray.shutdown()
    init_ray(CFG)
    try:
        ray.get(ray.remote(num_cpus=0)(fail).remote())
        seen, deadline = "", time.monotonic() + 30
        while marker not in seen and time.monotonic() < deadline:
            time.sleep(0.5)
            out, err = capfd.readouterr()
            seen += out + err
        assert f"RuntimeError: {marker}" in seen
    finally:
        ray.shutdown()
