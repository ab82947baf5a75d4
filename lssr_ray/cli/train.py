"""Fine-tune LSSR adapters with Ray Train.

    ray start --head ...   (from the repository root; see docs/TRAINING.md)
    ray job submit -- python jobs/train.py --config configs/train_cpu.yaml
    lssr-train --config configs/train_cpu.yaml        # stand-alone: starts a local Ray

Settings: the YAML file, then any option below, then every --set KEY=VALUE.
Starting it again with the same run_name resumes from the run's latest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from lssr_ray.cli.args import add_config_args, config_values, configure_logging, parse_set_items
from lssr_ray.config import TrainConfig, load_yaml
from lssr_ray.errors import ConfigError, LssrError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file with TrainConfig fields (configs/train_cpu.yaml)")
    add_config_args(p, TrainConfig, overrides_only=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig field (value parsed as YAML), e.g. --set learning_rate=1e-3")
    p.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS inside `ray job submit`, "
                   "else a new local Ray)")
    p.add_argument("--summary-json", help="also write the final summary here")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an input error, and debug logs")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The YAML file, then the options given, then every ``--set KEY=VALUE`` (YAML-parsed)."""
    data = load_yaml(args.config)
    data.update(config_values(args, TrainConfig))
    data.update(parse_set_items(args.set))
    # YAML 1.1 reads "1e-4" (no dot) as a string: give numeric fields numbers or a clear error
    for f in dataclasses.fields(TrainConfig):
        kind = type(f.default)
        if kind in (int, float) and isinstance(data.get(f.name), str):
            try:
                data[f.name] = kind(float(data[f.name]))
            except ValueError:
                raise ConfigError(f"{f.name} must be a number, got {data[f.name]!r}") from None
    return TrainConfig.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    """Exit code 2 with one line ``error: ...`` for a bad config, pairs store or storage path
    (checked before Ray starts); ``--debug`` shows the traceback instead."""
    args = parse_args(argv)
    configure_logging(args.debug)
    try:
        return _run(args)
    except LssrError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    from lssr_ray.train.preflight import check_train_inputs

    check_train_inputs(cfg)  # before Ray: a bad input is one line, not Ray Train retrying it

    import ray

    from lssr_ray.train.trainer import final_table, run_training

    address = args.address or os.environ.get("RAY_ADDRESS")  # set by `ray job submit`
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
    elif not ray.is_initialized():
        from lssr_ray.ray_local import start_local_ray

        # a fresh local Ray ("local"), never someone else's cluster on the same machine; reaped
        # with its agents if this driver is killed
        start_local_ray(log_to_driver=True)
    print(f"[train] config: {json.dumps(dataclasses.asdict(cfg))}", flush=True)
    t0 = time.perf_counter()
    summary = run_training(cfg)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    print(final_table(summary))
    print(f"wall time {summary['wall_s']} s")
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, default=str))
    return 0
