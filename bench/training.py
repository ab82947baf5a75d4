"""Training benchmark: samples/s of the Ray Train adapter fine-tuning with 1 and 2 workers.

Each run is ``jobs/train.py --config configs/train_cpu.yaml`` in a child process (its own
local Ray) with a fresh run name in a temporary storage folder, ``max_steps`` steps, one
checkpoint and one validation at the last step. Settings are those of the config file
(small stand-in base, bundled pairs, 16 x 16 (30 m) -> 48 x 48 (10 m) chips, batch 4 per
worker, fp32, gloo DDP), except the worker count.

``metrics.jsonl`` gives, per optimizer step k, the cumulative ``samples_per_s`` since the loop
started; the steady rate leaves the first step out (graph warm-up, DDP set-up):
``(S_N - S_1) / (S_N / r_N - S_1 / r_1)`` with ``S_k = k * batch * grad_accum * workers``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "train_cpu.yaml"


def steady_samples_per_s(history: list[dict[str, Any]], *, per_step: int) -> float | None:
    """Samples/s between the first and the last logged step (see the module docstring).

    ``per_step`` = samples per optimizer step over all workers. None with fewer than 2 steps.
    """
    steps = sorted((r for r in history if "samples_per_s" in r and r.get("rank", 0) == 0), key=lambda r: r["step"])
    if len(steps) < 2:
        return None
    first, last = steps[0], steps[-1]
    s1, sn = first["step"] * per_step, last["step"] * per_step
    dt = sn / last["samples_per_s"] - s1 / first["samples_per_s"]
    return (sn - s1) / dt if dt > 0 else None


def run_training_bench(workers: int, *, steps: int, tmp: Path, timeout: float = 600) -> dict[str, Any]:
    """One ``jobs/train.py`` run with ``workers`` workers for ``steps`` steps -> its rates."""
    import yaml

    cfg = yaml.safe_load(CONFIG.read_text())
    per_step = int(cfg.get("batch_size", 2)) * int(cfg.get("grad_accum", 1)) * workers
    out = tmp / f"train_{workers}w.json"
    cmd = [sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(CONFIG),
           "--run-name", f"bench-{workers}w", "--storage-path", str(tmp / "runs"),
           "--max-steps", str(steps), "--num-workers", str(workers),
           "--set", f"checkpoint_every={steps}", "--set", f"val_every={steps}", "--summary-json", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    with open(tmp / f"train_{workers}w.log", "w") as log:
        try:
            rc = subprocess.run(cmd, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = -9
    wall = time.perf_counter() - t0
    if rc != 0 or not out.is_file():
        tail = (tmp / f"train_{workers}w.log").read_text()[-800:].strip().splitlines()
        return {"workers": workers, "status": f"failed (exit {rc}): {tail[-1] if tail else ''}"}
    s = json.loads(out.read_text())
    hist = s.get("history", [])
    last = max((r for r in hist if "samples_per_s" in r), key=lambda r: r["step"], default={})
    return {
        "workers": workers,
        "status": "measured",
        "steps": steps,
        "cpus_per_worker": cfg.get("cpus_per_worker"),
        "batch_per_worker": cfg.get("batch_size"),
        "chip_10m_px": 3 * int(cfg.get("chip_size", 16)),
        "samples_per_s": steady_samples_per_s(hist, per_step=per_step),
        "samples_per_s_incl_first_step": last.get("samples_per_s"),
        "fit_wall_s": s.get("wall_s"),
        "process_wall_s": wall,
    }


def run_training(*, quick: bool = False, steps: int = 8, log: Any = print) -> dict[str, Any]:
    """The ``training`` section: 1 and 2 workers (quick: not run, Ray Train start-up alone is ~30 s)."""
    if quick:
        return {"runs": [], "status": "not measured: --quick (each Ray Train fit takes ~40 s here)"}
    runs = []
    with tempfile.TemporaryDirectory(prefix="lssr-bench-train-") as d:
        for w in (1, 2):
            r = run_training_bench(w, steps=steps, tmp=Path(d))
            runs.append(r)
            if r["status"] == "measured":
                log(f"  training {w} worker(s): {r['samples_per_s']:.2f} samples/s (steady), fit {r['fit_wall_s']} s")
            else:
                log(f"  training {w} worker(s): {r['status']}")
    return {"config": str(CONFIG.relative_to(REPO)), "runs": runs}


def training_table(section: dict[str, Any]) -> str:
    if not section.get("runs"):
        return section.get("status", "not measured")
    lines = [f"{'workers':>7} {'CPU/w':>5} {'batch/w':>7} {'chip px':>7} {'samples/s':>10} {'incl. step 1':>12} {'fit s':>6}"]
    for r in section["runs"]:
        if r["status"] != "measured":
            lines.append(f"{r['workers']:>7} {r['status']}")
            continue
        sps = f"{r['samples_per_s']:10.2f}" if r["samples_per_s"] else f"{'-':>10}"
        lines.append(f"{r['workers']:>7} {r['cpus_per_worker']:>5} {r['batch_per_worker']:>7} {r['chip_10m_px']:>7} "
                     f"{sps} {r['samples_per_s_incl_first_step']:12.2f} {r['fit_wall_s']:>6}")
    return "\n".join(lines)


__all__ = ["run_training", "run_training_bench", "steady_samples_per_s", "training_table"]
