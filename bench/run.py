"""lssr-ray benchmark suite: prints tables and writes bench/results.json (``make bench``).

Sections (``--sections``, comma-separated; default all):
  engines   time per 192x192 chip: torch eager / onnxruntime / tensorrt x batch 1, 2, 4, 8 vs
            bicubic on the same chips; FLOPs per chip; one SD-2.1-size forward (bench/engines.py)
  pipeline  Ray Data mapping throughput (chips/s, km2/h), ratio to engine-only, 1 vs 2 actors,
            peak RSS of the driver and each actor on two region sizes (bench/pipeline.py)
  training  Ray Train samples/s with 1 and 2 workers (bench/training.py)
  planner   wall time and device-hours for a region from the numbers above (bench/planner.py)
  hls_reads bytes fetched per output km2 and requests per chip reading a full-size HLS COG
            granule from loopback S3, block reads vs per-chip reads (bench/hls_reads.py)

Results of sections not run are kept from an existing ``--out`` file. ``--quick`` (seconds to
about a minute) runs reduced engines and pipeline sections and skips training.

Usage: .venv/bin/python bench/run.py [--quick] [--sections engines,planner] [--out bench/results.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SECTIONS = ("engines", "pipeline", "training", "planner", "hls_reads")


def machine_facts() -> dict[str, Any]:
    """CPU model, cores, RAM, load, GPU, library versions, git commit, UTC time."""
    import importlib.metadata as md

    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "onnxruntime", "ray", "diffusers", "peft", "numpy", "rasterio", "tensorrt"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name()
    except ImportError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu_model": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
        "git_commit": commit,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def parse_sections(text: str) -> list[str]:
    from lssr_ray.errors import ConfigError

    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SECTIONS]
    if bad or not names:
        raise ConfigError(f"unknown section(s) {bad or [text]}; valid: {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in names]


def _ms(x: float | None) -> str:
    return f"{x * 1e3:,.1f}" if x else "-"


def markdown(results: dict[str, Any]) -> str:
    """The measured tables of ``results`` as Markdown (for bench/RESULTS.md)."""
    out: list[str] = []
    m = results.get("machine", {})
    out += [f"Machine: {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, "
            f"GPU: {m.get('gpu') or 'none'}; Python {m.get('python')}; "
            + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
            + f"; commit {m.get('git_commit')}.", ""]
    runs = results.get("runs", {})
    out += ["| section | run at (UTC) | seconds | quick | load avg 1/5/15 min after |", "|---|---|---|---|---|"]
    out += [f"| {k} | {v['date_utc']} | {v['seconds']} | {v['quick']} | {v['loadavg_1_5_15']} |" for k, v in runs.items()]
    eng = results.get("engines")
    if eng:
        bic = {r["batch_size"]: r["s_per_chip"] for r in eng["rows"] if r["engine"] == "bicubic (torch interpolate)"}
        out += ["", "| engine | model | B | ms / chip (median) | ms / chip (min) | chips/s | x bicubic (torch) | status |",
                "|---|---|---|---|---|---|---|---|"]
        for r in eng["rows"]:
            s = r["s_per_chip"]
            ratio = f"{s / bic[r['batch_size']]:,.0f}" if s and not r["engine"].startswith("bicubic") and r["batch_size"] in bic else ""
            cps = f"{r['chips_per_s']:.2f}" if r["chips_per_s"] else "-"
            out.append(f"| {r['engine']} | {r['model']} | {r['batch_size']} | {_ms(s)} | {_ms(r.get('s_per_chip_min'))} "
                       f"| {cps} | {ratio} | {r['status']} |")
        fl = eng["flops_per_chip"]
        out += ["", "| model | parameters | GFLOP / chip | " + " | ".join(k for k in fl.get("sd21", fl["small"]) if k != "total") + " |",
                "|---|---|---|" + "---|" * (len(fl.get("sd21", fl["small"])) - 1)]
        for name, d in fl.items():
            keys = [k for k in fl.get("sd21", fl["small"]) if k != "total"]
            out.append(f"| {name} | {eng['parameters'][name]:,} | {d['total'] / 1e9:,.1f} | "
                       + " | ".join(f"{d.get(k, 0) / 1e9:,.1f}" for k in keys) + " |")
        out += ["", "onnxruntime / torch eager (small base): " + ", ".join(
            f"B={b}: {v['median']:.2f}x median, {v['min']:.2f}x min" for b, v in eng["onnxruntime_speedup_over_torch"].items())]
    pipe = results.get("pipeline")
    if pipe:
        head = ("| run | chips | threads / actor CPUs | chips/s | km2/h (stage 1) | pipeline / engine-only (all cores) "
                "| / engine-only (1 thread) | stage 1 s | stage 2 s | run wall s |")
        out += ["", head, "|---|---|---|---|---|---|---|---|---|---|"]
        for e in pipe["engine_only"]:
            out.append(f"| engine only ({e['engine']}, B={e['batch_size']}, {e['region']} region) | {e['chips']} | "
                       f"{e['threads']} thr | {e['chips_per_s']:.2f} | {e['chips_per_s'] * 2.8224 * 3600:,.0f} | | | | | |")
        for r in pipe["runs"]:
            if r["status"] != "measured":
                out.append(f"| {r['region']}, {r.get('actors')} actor(s) | | | | | {r['status']} | | | | |")
                continue
            crop = " + crop-type stage" if r.get("crop_type_stage") else ""
            out.append(f"| pipeline, {r['region']} region, {r['actors']} actor(s){crop} | {r['chips']} | {r['actor_cpus']} CPU | "
                       f"{r['chips_per_s']:.2f} | {r['km2_per_h']:,.0f} | {r['ratio_to_engine_only_all_cores']:.2f} | "
                       f"{r.get('ratio_to_engine_only_1_thread', float('nan')):.2f} | {r['stage1_s']:.1f} | "
                       f"{r['stage2_s']:.1f} | {r['run_wall_s']:.1f} |")
        out += ["", "| run | driver | LSSR actor(s) | read actor | commit actor | blend actors | Ray system processes |",
                "|---|---|---|---|---|---|---|"]
        for r in pipe["runs"]:
            if r["status"] == "measured":
                mm = r["memory_mb"]
                crop = " + crop-type stage" if r.get("crop_type_stage") else ""
                out.append(f"| {r['region']} ({r['chips']} chips), {r['actors']} actor(s){crop} | {mm['driver']} | "
                           f"{', '.join(map(str, mm['lssr_actors']))} | {', '.join(map(str, mm['read_actors']))} | "
                           f"{', '.join(map(str, mm['commit_actors']))} | {', '.join(map(str, mm['blend_actors']))} | "
                           f"{', '.join(map(str, mm['ray_system']))} |")
    tr = results.get("training")
    if tr and tr.get("runs"):
        out += ["", "| workers | CPU / worker | batch / worker | chip (10 m px) | samples/s (steady) | samples/s (incl. step 1) | fit wall s |",
                "|---|---|---|---|---|---|---|"]
        for r in tr["runs"]:
            if r["status"] != "measured":
                out.append(f"| {r['workers']} | {r['status']} | | | | | |")
                continue
            sps = f"{r['samples_per_s']:.2f}" if r["samples_per_s"] else "-"
            out.append(f"| {r['workers']} | {r['cpus_per_worker']} | {r['batch_per_worker']} | {r['chip_10m_px']} | {sps} | "
                       f"{r['samples_per_s_incl_first_step']:.2f} | {r['fit_wall_s']} |")
    pl = results.get("planner")
    if pl:
        from bench.planner import _hms

        out += ["", f"Region {pl['area_km2']:,.0f} km2, {pl['dates']} date(s): {pl['chips']:,} chips.", "",
                "| scenario | devices | wall time | device-hours | km2/h | kind |", "|---|---|---|---|---|---|"]
        for p in pl["plans"]:
            out.append(f"| {p['label']} | {p['n_devices']} | {_hms(p['wall_s'])} | {p['device_hours']:,.1f} | "
                       f"{p['km2_per_h']:,.0f} | {'measured' if p['measured'] else 'ESTIMATE'} |")
    if results.get("hls_reads"):
        from bench.hls_reads import hls_reads_table

        out += ["", hls_reads_table(results["hls_reads"])]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--quick", action="store_true", help="reduced sizes and repeats (seconds to ~1 min)")
    ap.add_argument("--out", default=str(HERE / "results.json"), help="JSON output (merged with an existing file)")
    ap.add_argument("--threads", type=int, help="torch/onnxruntime threads for the engine rows (default: all cores)")
    ap.add_argument("--markdown", action="store_true", help="print --out's results as Markdown tables; measure nothing")
    a = ap.parse_args(argv)

    from lssr_ray.errors import ConfigError

    if a.markdown:
        print(markdown(json.loads(Path(a.out).read_text())))
        return 0

    try:
        sections = parse_sections(a.sections)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(a.out)
    results: dict[str, Any] = {}
    if out.is_file():
        try:
            results = json.loads(out.read_text())
        except json.JSONDecodeError:
            results = {}
    results["machine"] = machine_facts()
    results.setdefault("runs", {})
    print(f"machine: {results['machine']['cpu_model']}, {results['machine']['cores']} cores, "
          f"{results['machine']['ram_gib']} GiB, GPU {results['machine']['gpu'] or 'none'}, "
          f"load {results['machine']['loadavg_1_5_15']}")
    t_all = time.perf_counter()
    for name in sections:
        t0 = time.perf_counter()
        print(f"\n== {name}{' (quick)' if a.quick else ''}", flush=True)
        if name == "engines":
            from bench.engines import engine_table, run_engines

            results["engines"] = run_engines(quick=a.quick, threads=a.threads,
                                             log=lambda s: print(s, flush=True))
            print(engine_table(results["engines"]))
        elif name == "pipeline":
            from bench.pipeline import pipeline_table, run_pipeline

            results["pipeline"] = run_pipeline(quick=a.quick, log=lambda s: print(s, flush=True))
            print(pipeline_table(results["pipeline"]))
        elif name == "training":
            from bench.training import run_training, training_table

            results["training"] = run_training(quick=a.quick, log=lambda s: print(s, flush=True))
            print(training_table(results["training"]))
        elif name == "planner":
            from bench.planner import planner_section, planner_table

            results["planner"] = planner_section(results)
            print(planner_table(results["planner"]))
        elif name == "hls_reads":
            from bench.hls_reads import hls_reads_table, run_hls_reads

            results["hls_reads"] = run_hls_reads(aoi_km=5.0 if a.quick else 15.0, log=lambda s: print(s, flush=True))
            results["hls_reads"]["machine"] = results["machine"]  # its own facts: other sections ran elsewhen
            print(hls_reads_table(results["hls_reads"]))
        results["runs"][name] = {"quick": a.quick, "seconds": round(time.perf_counter() - t0, 1),
                                 "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                 "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str) + "\n")  # after each section
    print(f"\nwrote {out} ({time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
