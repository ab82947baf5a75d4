"""Fine-tune LSSR adapters with Ray Train.

    ray job submit --working-dir . -- python jobs/train.py --config configs/train_cpu.yaml
    python jobs/train.py --config configs/train_cpu.yaml        # stand-alone: starts a local Ray

Starting it again with the same ``run_name`` resumes from the run's latest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from lssr_ray.config import TrainConfig, load_yaml  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file with TrainConfig fields (configs/train_cpu.yaml)")
    p.add_argument("--run-name", help="override run_name (same name = resume)")
    p.add_argument("--storage-path", help="override storage_path (local folder or s3://bucket/prefix)")
    p.add_argument("--max-steps", type=int, help="override max_steps")
    p.add_argument("--num-workers", type=int, help="override num_workers")
    p.add_argument("--summary-json", help="also write the final summary here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = load_yaml(args.config)
    overrides = {
        "run_name": args.run_name,
        "storage_path": args.storage_path,
        "max_steps": args.max_steps,
        "num_workers": args.num_workers,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig.from_dict(data)

    import ray

    from lssr_ray.train.trainer import final_table, run_training

    ray.init(address="auto" if _cluster_running() else None, ignore_reinit_error=True,
             log_to_driver=True)
    print(f"[train] config: {json.dumps(dataclasses.asdict(cfg))}", flush=True)
    t0 = time.perf_counter()
    summary = run_training(cfg)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    print(final_table(summary))
    print(f"wall time {summary['wall_s']} s")
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, default=str))
    return 0


def _cluster_running() -> bool:
    """True inside `ray job submit` or when a local head was started with `ray start --head`."""
    import os

    if os.environ.get("RAY_ADDRESS"):
        return True
    try:
        from ray._private.services import find_gcs_addresses

        return bool(find_gcs_addresses())
    except Exception:  # private API moved: fall back to a fresh local Ray
        return False


if __name__ == "__main__":
    sys.exit(main())
