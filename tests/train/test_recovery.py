"""Fault tolerance and resume.

1. SIGKILL one Ray Train worker mid-run (found with the Ray state API): Ray Train restarts the
   worker group from the last checkpoint (not step 0) and the run finishes with every step once
   and a final checkpoint.
2. Starting the finished run again with the same run name and a larger ``max_steps`` continues
   from its latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

MAX_STEPS = 16  # the chaos_run fixture (conftest.py)


def test_killed_worker_recovers_from_last_checkpoint(chaos_run):
    import torch

    cfg, summary, out = chaos_run
    assert "killed_pid" in out, "the run finished before a worker could be killed"
    starts = summary["starts"]
    assert starts[0] == 0 and len(starts) == 2, starts
    resumed_at = starts[1]
    assert resumed_at >= 2 and resumed_at % cfg.checkpoint_every == 0, starts  # a checkpoint step, not 0
    steps = [r["step"] for r in summary["history"] if "event" not in r]
    assert steps == list(range(1, cfg.max_steps + 1))  # each step once: steps after the checkpoint redone
    events = [i for i, r in enumerate(summary["history"]) if r.get("event") == "start"]
    assert summary["history"][events[1] - 1]["step"] == resumed_at
    state = torch.load(Path(summary["checkpoint"]) / "train_state.pt", weights_only=False)
    assert state["step"] == cfg.max_steps
    assert json.loads((Path(summary["checkpoint"]) / "train_pairs.json").read_text())["train"]


def test_rerun_with_same_name_resumes(chaos_run):
    """The finished run, started again with the same run name and max_steps + 2, runs only 2 steps."""
    import torch

    from lssr_ray.train.trainer import run_training

    cfg, first, _ = chaos_run
    again = run_training(dataclasses.replace(cfg, max_steps=MAX_STEPS + 2))
    assert again["starts"] == [*first["starts"], MAX_STEPS]
    steps = [r["step"] for r in again["history"] if "event" not in r]
    assert steps == list(range(1, MAX_STEPS + 3))
    state = torch.load(Path(again["checkpoint"]) / "train_state.pt", weights_only=False)
    assert state["step"] == MAX_STEPS + 2
    log = Path(cfg.storage_path) / cfg.run_name / "metrics.jsonl"
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()][-1] == MAX_STEPS + 2
