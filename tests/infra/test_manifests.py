"""Cluster definitions under infra/ checked against the job entry points, pyproject pins and each other.

Every ``python jobs/<file>.py <args>`` command found anywhere in infra/ (YAML values, YAML comments,
``runtimeEnvYAML``, Dockerfiles, README) is parsed by that script's real argparse parser in a
subprocess: the script runs until it calls ``ArgumentParser.parse_args``, which is intercepted and
applied to the manifest's arguments instead. A missing script, an unknown or abbreviated flag, a
bad value, or a referenced repository file that does not exist fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
KUBERAY = INFRA / "kuberay"
DOCKER = INFRA / "docker"
PYTHONS = {"python", "python3", "python3.11"}
SHELL_OPS = {"&&", "||", ";", "|", ">", ">>", "<", "&", "2>", "(", ")"}
# top-level repository folders: a relative path under one of them, in a job argument, must exist
REPO_DIRS = (
    "configs",
    "examples",
    "jobs",
    "infra",
    "scripts",
    "bench",
    "lssr_ray",
    "data",
    "models",
)
# in free text "models/..." or "data/..." may name a folder on a volume or bucket, so only these count
TEXT_REPO_DIRS = REPO_DIRS[:7]
PLACEHOLDER = re.compile(
    r"^(<[^>]*>|\$\{?\w+\}?|REPLACE_?ME|CHANGE_?ME|\.\.\.|x+|)$", re.IGNORECASE
)
# field names of the KubeRay ray.io/v1 types (ray-operator/apis/ray/v1/*_types.go, v1.1 to v1.4): a typo
# such as `shutdownAfterJobFinish` is silently dropped by the API server, so it is caught here
CLUSTER_KEYS = {
    "headGroupSpec",
    "workerGroupSpecs",
    "rayVersion",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headServiceAnnotations",
    "suspend",
    "managedBy",
    "gcsFaultToleranceOptions",
    "upgradeStrategy",
}
HEAD_KEYS = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
GROUP_KEYS = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "numOfHosts",
    "rayStartParams",
    "template",
    "scaleStrategy",
    "idleTimeoutSeconds",
    "suspend",
}
AUTOSCALER_KEYS = {
    "resources",
    "image",
    "imagePullPolicy",
    "env",
    "envFrom",
    "volumeMounts",
    "securityContext",
    "idleTimeoutSeconds",
    "upscalingMode",
    "version",
}
RAYJOB_KEYS = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "rayClusterSpec",
    "submitterPodTemplate",
    "metadata",
    "clusterSelector",
    "submitterConfig",
    "managedBy",
    "deletionStrategy",
    "entrypoint",
    "runtimeEnvYAML",
    "jobId",
    "submissionMode",
    "entrypointResources",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes",
    "suspend",
    "schedule",
}
RUNTIME_ENV_KEYS = {
    "working_dir",
    "py_modules",
    "excludes",
    "pip",
    "uv",
    "conda",
    "env_vars",
    "container",
    "image_uri",
    "config",
    "java_jars",
    "nsight",
    "py_executable",
    "worker_process_setup_hook",
}


# ----------------------------------------------------------------------------------------------
# pyproject pins
# ----------------------------------------------------------------------------------------------
def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins() -> dict[str, str]:
    """Exact ``name==version`` pins of pyproject (dependencies and extras), plus the project itself."""
    pp = _pyproject()
    reqs = list(pp["project"]["dependencies"])
    for extra in pp["project"].get("optional-dependencies", {}).values():
        reqs += extra
    pins = {}
    for r in reqs:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([0-9][\w.+-]*)\s*$", r)
        if m:
            pins[_canon(m.group(1))] = m.group(3)
    pins[_canon(pp["project"]["name"])] = pp["project"]["version"]
    return pins


def _python_tag() -> str:
    """``py311`` from requires-python ``>=3.11,<3.12``."""
    m = re.search(r">=\s*3\.(\d+)", _pyproject()["project"]["requires-python"])
    return f"py3{m.group(1)}"


# ----------------------------------------------------------------------------------------------
# text sources and command extraction
# ----------------------------------------------------------------------------------------------
def _yaml_strings(obj, out: list[str]) -> None:
    if isinstance(obj, str):
        out.append(obj)
        if "\n" in obj and ":" in obj:  # an embedded YAML document (runtimeEnvYAML)
            try:
                _yaml_strings(yaml.safe_load(obj), out)
            except yaml.YAMLError:
                pass
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _yaml_strings(k, out)
            _yaml_strings(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _yaml_strings(v, out)


def texts_of(name: str, text: str) -> list[str]:
    """The places commands can hide in one file: YAML string values and comments, or raw text."""
    if name.endswith((".yaml", ".yml")):
        out: list[str] = []
        for doc in yaml.safe_load_all(text):
            _yaml_strings(doc, out)
        comments = [
            re.sub(r"^\s*#\s?", "", ln) for ln in text.splitlines() if ln.lstrip().startswith("#")
        ]
        out.append("\n".join(comments))
        return out
    return [text]


def logical_lines(text: str) -> list[str]:
    text = text.replace("`", " ")
    text = re.sub(r"\\\s*\n\s*(#\s?)?", " ", text)  # backslash continuations, also inside comments
    return [ln for ln in text.splitlines() if ln.strip()]


def _tokens(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lex.whitespace_split = True
    lex.commenters = ""
    try:
        return list(lex)
    except ValueError:  # unbalanced quotes in prose
        return line.split()


@dataclass(frozen=True)
class JobCommand:
    origin: str
    script: str  # repository-relative, e.g. jobs/train.py
    args: tuple[str, ...]


def _repo_rel(path: str, workdirs: tuple[str, ...]) -> str:
    for w in workdirs:
        if path.startswith(w.rstrip("/") + "/"):
            return path[len(w.rstrip("/")) + 1 :]
    return path.removeprefix("./")


def extract_commands(origin: str, text: str, *, workdirs: tuple[str, ...] = ()) -> list[JobCommand]:
    """Every ``python <...>jobs/<file>.py <args>`` in ``text`` (the args end at a shell operator)."""
    cmds = []
    for src in texts_of(origin, text):
        for line in logical_lines(src):
            toks = _tokens(line)
            for i, t in enumerate(toks[:-1]):
                if os.path.basename(t) not in PYTHONS:
                    continue
                script = _repo_rel(toks[i + 1], workdirs)
                if not re.fullmatch(r"jobs/[\w.-]+\.py", script):
                    continue
                args = []
                for a in toks[i + 2 :]:
                    if a in SHELL_OPS:
                        break
                    args.append(a)
                cmds.append(JobCommand(origin, script, tuple(args)))
    return cmds


def repo_path_tokens(
    text: str, *, workdirs: tuple[str, ...] = (), dirs: tuple[str, ...] = REPO_DIRS
) -> set[str]:
    """Repository-relative paths named in ``text`` (configs/..., examples/..., infra/...)."""
    found = set()
    for w in workdirs:  # absolute paths inside the image map onto the repository
        text = text.replace(w.rstrip("/") + "/", " ")
    pat = r"(?<![\w/.~$-])((?:" + "|".join(dirs) + r")/[\w./-]*[\w])"
    for m in re.finditer(pat, text):
        p = m.group(1)
        if not re.search(r"[*<>${}]", p):
            found.add(p)
    return found


# ----------------------------------------------------------------------------------------------
# the real argparse parsers, probed in a subprocess
# ----------------------------------------------------------------------------------------------
_PROBE = r"""
import argparse, contextlib, io, json, os, runpy, sys
script, arg_lists = sys.argv[1], json.loads(sys.argv[2])
class _Captured(BaseException):
    pass
orig_parse, orig_known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
active = [False]
def _check(parser):
    active[0] = True
    errors = []
    for args in arg_lists:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                orig_parse(parser, args)
            errors.append(None)
        except SystemExit as exc:
            errors.append(None if exc.code == 0 else (err.getvalue().strip() or f"exit {exc.code}"))
    opts = sorted(parser._option_string_actions)
    print("@@PROBE@@" + json.dumps({"options": opts, "errors": errors}), flush=True)
    raise _Captured
def parse_args(self, args=None, namespace=None):
    return orig_parse(self, args, namespace) if active[0] else _check(self)
def parse_known_args(self, args=None, namespace=None):
    return orig_known(self, args, namespace) if active[0] else _check(self)
argparse.ArgumentParser.parse_args = parse_args
argparse.ArgumentParser.parse_known_args = parse_known_args
sys.argv = [script]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
try:
    runpy.run_path(script, run_name="__main__")
except _Captured:
    sys.exit(0)
print("@@PROBE@@" + json.dumps({"error": "the script ended without calling ArgumentParser.parse_args"}))
"""


def probe_parser(script: str, arg_lists: list[list[str]]) -> dict:
    """Run ``script`` (repository-relative) up to its parse_args; parse each arg list with its parser.

    Returns ``{"options": [...], "errors": [None | argparse message, ...]}`` or ``{"error": ...}``.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, script, json.dumps(arg_lists)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("@@PROBE@@"):
            return json.loads(line[len("@@PROBE@@") :])
    return {
        "error": f"{script} failed before parsing arguments (rc {proc.returncode}): "
        f"{proc.stderr.strip()[-1500:]}"
    }


def check_commands(cmds: list[JobCommand]) -> list[str]:
    """Problems with job commands: missing scripts, unknown/abbreviated flags, argparse errors, paths."""
    problems = []
    by_script: dict[str, list[JobCommand]] = {}
    for c in cmds:
        if not (REPO / c.script).is_file():
            problems.append(f"{c.origin}: {c.script} does not exist")
            continue
        by_script.setdefault(c.script, []).append(c)
        for a in c.args:
            for p in repo_path_tokens(a):
                if not (REPO / p).exists():
                    problems.append(
                        f"{c.origin}: {c.script} argument {p} does not exist in the repository"
                    )
    for script, group in sorted(by_script.items()):
        res = probe_parser(script, [list(c.args) for c in group])
        if "error" in res:
            problems.append(res["error"])
            continue
        options = set(res["options"])
        for c, err in zip(group, res["errors"]):
            for a in c.args:
                flag = a.split("=", 1)[0]
                if flag.startswith("--") and flag != "--" and flag not in options:
                    problems.append(
                        f"{c.origin}: {script} has no option {flag} "
                        f"(valid: {', '.join(sorted(o for o in options if o.startswith('--')))})"
                    )
            if err:
                problems.append(
                    f"{c.origin}: {script} {' '.join(c.args)} -> {err.splitlines()[-1]}"
                )
    return problems


# ----------------------------------------------------------------------------------------------
# versions and secrets
# ----------------------------------------------------------------------------------------------
def check_versions(origin: str, text: str, pins: dict[str, str], py_tag: str) -> list[str]:
    problems = []
    for m in re.finditer(
        r"(?<![\w.-])([A-Za-z][A-Za-z0-9_.-]*)(\[[^\]\s]*\])?==([0-9][\w.+-]*[\w])", text
    ):
        name, ver = _canon(m.group(1)), m.group(3)
        if name in pins and ver != pins[name]:
            problems.append(f"{origin}: {m.group(0)} but pyproject pins {name}=={pins[name]}")
    for m in re.finditer(r"rayproject/ray(?:-ml)?:([\w.-]+)", text):
        tag = m.group(1)
        tm = re.fullmatch(r"(\d+\.\d+\.\d+)-(py3\d+)-(cpu|gpu|cu\d+)", tag)
        if not tm:
            problems.append(
                f"{origin}: Ray image tag {tag} must be <ray version>-<pyXY>-<cpu|gpu|cuXY>"
            )
        elif tm.group(1) != pins["ray"] or tm.group(2) != py_tag:
            problems.append(
                f"{origin}: Ray image {tag} does not match ray=={pins['ray']} / {py_tag}"
            )
    project = _canon(_pyproject()["project"]["name"])
    for m in re.finditer(r"[\w./-]*/" + re.escape(project) + r":([\w.-]+)", text):
        tm = re.fullmatch(r"([\w.]+)-(cpu|gpu)", m.group(1))
        if not tm or tm.group(1) != pins[project]:
            problems.append(
                f"{origin}: image {m.group(0)} must be tagged {pins[project]}-cpu or -gpu"
            )
        elif not (DOCKER / f"Dockerfile.{tm.group(2)}").is_file():
            problems.append(
                f"{origin}: image {m.group(0)} has no infra/docker/Dockerfile.{tm.group(2)}"
            )
    for m in re.finditer(r"rayVersion:\s*[\"']?([\w.]+)", text):
        if m.group(1) != pins["ray"]:
            problems.append(
                f"{origin}: rayVersion {m.group(1)} but pyproject pins ray=={pins['ray']}"
            )
    return problems


def find_secrets(origin: str, text: str) -> list[str]:
    """AWS access key ids, non-placeholder secret keys/session tokens, private keys."""
    problems = []
    for m in re.finditer(r"(?<![A-Z0-9])(AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])", text):
        problems.append(f"{origin}: AWS access key id {m.group(0)[:4]}...")
    for m in re.finditer(
        r"(aws_secret_access_key|aws_session_token|secret_key)[\"']?\s*[:=]\s*[\"']?([^\"'\s#,}]*)",
        text,
        flags=re.IGNORECASE,
    ):
        if not PLACEHOLDER.match(m.group(2)):
            problems.append(f"{origin}: {m.group(1)} has a non-placeholder value")
    if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
        problems.append(f"{origin}: a private key")
    return problems


# ----------------------------------------------------------------------------------------------
# KubeRay structure
# ----------------------------------------------------------------------------------------------
def _pod_specs(cluster: dict) -> list[tuple[str, dict, str]]:
    out = [("head", cluster["headGroupSpec"]["template"]["spec"], "head")]
    for g in cluster.get("workerGroupSpecs", []):
        out.append((f"group {g.get('groupName')}", g["template"]["spec"], "worker"))
    return out


def _gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def check_cluster_spec(
    origin: str, spec: dict, *, pins: dict[str, str], sa: str, secret: str, pvc: str
) -> list[str]:
    """Structure and invariants of a RayCluster spec (standalone or a RayJob's rayClusterSpec)."""
    p = []
    for where, obj, known in [
        ("spec", spec, CLUSTER_KEYS),
        ("headGroupSpec", spec.get("headGroupSpec", {}), HEAD_KEYS),
        ("autoscalerOptions", spec.get("autoscalerOptions", {}), AUTOSCALER_KEYS),
    ] + [(f"group {g.get('groupName')}", g, GROUP_KEYS) for g in spec.get("workerGroupSpecs", [])]:
        if set(obj) - known:
            p.append(f"{origin}: unknown {where} fields {sorted(set(obj) - known)}")
    if spec.get("autoscalerOptions", {}).get("upscalingMode", "Default") not in (
        "Default",
        "Aggressive",
        "Conservative",
    ):
        p.append(f"{origin}: upscalingMode must be Default, Aggressive or Conservative")
    if str(spec.get("rayVersion")) != pins["ray"]:
        p.append(f"{origin}: rayVersion {spec.get('rayVersion')!r} != ray pin {pins['ray']}")
    if spec.get("enableInTreeAutoscaling") is not True:
        p.append(f"{origin}: enableInTreeAutoscaling must be true")
    head = spec.get("headGroupSpec") or {}
    params = head.get("rayStartParams", {})
    if params.get("num-cpus") != "0":
        p.append(f'{origin}: head rayStartParams num-cpus must be "0" (no tasks on the head)')
    groups = spec.get("workerGroupSpecs") or []
    for g in [head] + groups:
        for k, v in (g.get("rayStartParams") or {}).items():
            if not isinstance(v, str):
                p.append(f"{origin}: rayStartParams {k} must be a string, got {v!r}")
    names = [g.get("groupName") for g in groups]
    if len(set(names)) != len(names) or None in names:
        p.append(f"{origin}: worker groups need unique groupName values, got {names}")
    kinds = set()
    for g in groups:
        lo, n, hi = g.get("minReplicas"), g.get("replicas"), g.get("maxReplicas")
        if not all(isinstance(x, int) for x in (lo, n, hi)) or not (0 <= lo <= n <= hi and hi >= 1):
            p.append(
                f"{origin}: group {g.get('groupName')} needs 0 <= minReplicas <= replicas <= maxReplicas, "
                f"maxReplicas >= 1 (got {lo}, {n}, {hi})"
            )
        ctrs = g["template"]["spec"]["containers"]
        gpus = {_gpus(c) for c in ctrs}
        kinds.add("gpu" if gpus != {0} else "cpu")
        for c in ctrs:
            res = c.get("resources", {})
            if _gpus(c):
                if (
                    _gpus(c) != 1
                    or res.get("requests", {}).get("nvidia.com/gpu")
                    != res["limits"]["nvidia.com/gpu"]
                ):
                    p.append(
                        f"{origin}: group {g.get('groupName')} must request and limit nvidia.com/gpu: 1"
                    )
                if not c["image"].endswith("-gpu"):
                    p.append(
                        f"{origin}: GPU group {g.get('groupName')} runs {c['image']}, not a -gpu image"
                    )
    if kinds != {"cpu", "gpu"}:
        p.append(f"{origin}: needs a CPU and a GPU worker group, found {sorted(kinds)}")
    for where, pod, role in _pod_specs(spec):
        if pod.get("serviceAccountName") != sa:
            p.append(f"{origin}: {where} serviceAccountName must be {sa} (S3 via IRSA)")
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        for v in vols.values():
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if claim is not None and claim != pvc:
                p.append(f"{origin}: {where} mounts PVC {claim}, defined is {pvc}")
        if not any(
            v.get("persistentVolumeClaim", {}).get("claimName") == pvc for v in vols.values()
        ):
            p.append(f"{origin}: {where} lacks the shared volume {pvc}")
        for c in pod["containers"]:
            refs = [e.get("secretRef", {}) for e in c.get("envFrom", [])]
            if {"name": secret, "optional": True} not in refs:
                p.append(
                    f"{origin}: {where} container {c['name']} needs envFrom secretRef {secret} (optional)"
                )
            for e in c.get("env", []):
                if e["name"].startswith("AWS_") and "KEY" in e["name"] and "value" in e:
                    p.append(
                        f"{origin}: {where} sets {e['name']} literally; use the Secret or IRSA"
                    )
            for m in c.get("volumeMounts", []):
                if m["name"] not in vols:
                    p.append(f"{origin}: {where} mounts undefined volume {m['name']}")
    return p


def _gpu_capacity(spec: dict) -> int:
    return sum(
        g["maxReplicas"] * max(_gpus(c) for c in g["template"]["spec"]["containers"])
        for g in spec.get("workerGroupSpecs", [])
    )


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _named(kind: str) -> str:
    for f in sorted(KUBERAY.glob("*.yaml")):
        for d in _docs(f):
            if d["kind"] == kind:
                return d["metadata"]["name"]
    raise AssertionError(f"no {kind} manifest in {KUBERAY}")


def _dockerfile(flavour: str) -> dict:
    text = (DOCKER / f"Dockerfile.{flavour}").read_text()
    lines = logical_lines(
        "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    workdir = [ln.split()[1] for ln in lines if ln.startswith("WORKDIR ")][-1]
    copies = []
    for ln in lines:
        if ln.startswith("COPY "):
            parts = [t for t in ln.split()[1:] if not t.startswith("--")]
            copies += [(s, parts[-1]) for s in parts[:-1]]
    return {"text": text, "from": froms, "workdir": workdir, "copies": copies}


def _workdirs() -> tuple[str, ...]:
    return tuple(sorted({_dockerfile(f)["workdir"] for f in ("cpu", "gpu")}))


def _infra_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------
# tests on the real files
# ----------------------------------------------------------------------------------------------
def test_expected_files_exist():
    for rel in (
        "kuberay/raycluster.yaml",
        "kuberay/rayjob-train.yaml",
        "kuberay/rayjob-map-iowa.yaml",
        "kuberay/s3-credentials.example.yaml",
        "kuberay/serviceaccount.yaml",
        "kuberay/shared-pvc.yaml",
        "aws/cluster-gpu.yaml",
        "docker/Dockerfile.cpu",
        "docker/Dockerfile.gpu",
        "runtime_env.yaml",
        "README.md",
    ):
        assert (INFRA / rel).is_file(), rel


def test_every_yaml_parses_with_kind_and_apiversion():
    for f in _infra_files():
        if f.suffix in (".yaml", ".yml"):
            docs = _docs(f)
            assert docs, f
            if f.parent == KUBERAY:
                for d in docs:
                    assert {"apiVersion", "kind", "metadata"} <= d.keys(), f
                    assert d["metadata"].get("name"), f
                    if d["kind"] in ("RayCluster", "RayJob"):
                        assert d["apiVersion"] == "ray.io/v1", f


def test_job_commands_match_entry_point_parsers():
    wd = _workdirs()
    cmds = []
    for f in _infra_files():
        cmds += extract_commands(str(f.relative_to(REPO)), f.read_text(), workdirs=wd)
    scripts = {c.script for c in cmds}
    assert {"jobs/train.py", "jobs/map_region.py"} <= scripts, scripts
    rayjobs = [c for c in cmds if c.origin.startswith("infra/kuberay/rayjob-")]
    assert len(rayjobs) >= 2
    problems = check_commands(cmds)
    assert not problems, "\n".join(problems)


def test_repository_paths_named_in_infra_exist():
    wd = _workdirs()
    missing = []
    for f in _infra_files():
        for p in repo_path_tokens(f.read_text(), workdirs=wd, dirs=TEXT_REPO_DIRS):
            if not (REPO / p).exists():
                missing.append(f"{f.relative_to(REPO)}: {p}")
    assert not missing, "\n".join(missing)


def test_versions_match_pyproject():
    pins, tag = _pins(), _python_tag()
    assert pins["ray"] and pins["torch"] and tag == "py311"
    problems = []
    for f in _infra_files():
        problems += check_versions(str(f.relative_to(REPO)), f.read_text(), pins, tag)
    assert not problems, "\n".join(problems)


def test_no_credentials_in_infra():
    problems = []
    for f in _infra_files():
        problems += find_secrets(str(f.relative_to(REPO)), f.read_text())
    assert not problems, "\n".join(problems)
    secret = next(
        d for d in _docs(KUBERAY / "s3-credentials.example.yaml") if d["kind"] == "Secret"
    )
    for k, v in secret["stringData"].items():
        if "KEY" in k:
            assert PLACEHOLDER.match(v), (k, v)


def test_kuberay_clusters_and_jobs():
    pins = _pins()
    sa, secret, pvc = _named("ServiceAccount"), _named("Secret"), _named("PersistentVolumeClaim")
    wd = _workdirs()
    copied = {s.rstrip("/") for f in ("cpu", "gpu") for s, _ in _dockerfile(f)["copies"]}
    seen = {"RayCluster": 0, "RayJob": 0}
    problems = []
    for f in sorted(KUBERAY.glob("*.yaml")):
        for d in _docs(f):
            origin = f"{f.name} {d['kind']}/{d['metadata']['name']}"
            if d["kind"] == "RayCluster":
                seen["RayCluster"] += 1
                problems += check_cluster_spec(
                    origin, d["spec"], pins=pins, sa=sa, secret=secret, pvc=pvc
                )
            elif d["kind"] == "RayJob":
                seen["RayJob"] += 1
                s = d["spec"]
                if set(s) - RAYJOB_KEYS:
                    problems.append(
                        f"{origin}: unknown RayJob spec fields {sorted(set(s) - RAYJOB_KEYS)}"
                    )
                problems += check_cluster_spec(
                    origin, s["rayClusterSpec"], pins=pins, sa=sa, secret=secret, pvc=pvc
                )
                if s.get("shutdownAfterJobFinishes") is not True:
                    problems.append(f"{origin}: shutdownAfterJobFinishes must be true")
                if (
                    not isinstance(s.get("ttlSecondsAfterFinished"), int)
                    or s["ttlSecondsAfterFinished"] < 0
                ):
                    problems.append(f"{origin}: ttlSecondsAfterFinished must be an int >= 0")
                if s.get("submissionMode", "K8sJobMode") not in (
                    "K8sJobMode",
                    "HTTPMode",
                    "InteractiveMode",
                    "SidecarMode",
                ):
                    problems.append(f"{origin}: unknown submissionMode {s['submissionMode']}")
                renv = yaml.safe_load(s.get("runtimeEnvYAML", "")) or {}
                if set(renv) - RUNTIME_ENV_KEYS:
                    problems.append(
                        f"{origin}: unknown runtime env keys {set(renv) - RUNTIME_ENV_KEYS}"
                    )
                if renv.get("working_dir") not in wd:
                    problems.append(
                        f"{origin}: working_dir {renv.get('working_dir')} is not the image WORKDIR {wd}"
                    )
                sub = s.get("submitterPodTemplate", {}).get("spec", {})
                if sub and sub.get("serviceAccountName") != sa:
                    problems.append(f"{origin}: submitter pod serviceAccountName must be {sa}")
                cmds = extract_commands(f.name, s["entrypoint"], workdirs=wd)
                if len(cmds) != 1:
                    problems.append(
                        f"{origin}: entrypoint must run one jobs/*.py script, got {s['entrypoint']!r}"
                    )
                cap = _gpu_capacity(s["rayClusterSpec"])
                for c in cmds:
                    if c.script.split("/")[0] not in copied:
                        problems.append(f"{origin}: {c.script} is not copied into the images")
                    for p in repo_path_tokens(" ".join(c.args)):
                        if not any(p == x or p.startswith(x + "/") for x in copied):
                            problems.append(f"{origin}: {p} is not copied into the images")
                    for flag in ("--num-workers", "--actors"):
                        if flag in c.args:
                            n = int(c.args[c.args.index(flag) + 1])
                            if n > cap:
                                problems.append(
                                    f"{origin}: {flag} {n} > GPU capacity {cap} (maxReplicas x GPUs)"
                                )
    assert seen["RayCluster"] >= 1 and seen["RayJob"] >= 2, seen
    assert not problems, "\n".join(problems)


def _ray_cluster_specs() -> list[tuple[str, dict]]:
    out = []
    for f in sorted(KUBERAY.glob("*.yaml")):
        for d in _docs(f):
            if d["kind"] == "RayCluster":
                out.append((f.name, d["spec"]))
            elif d["kind"] == "RayJob":
                out.append((f.name, d["spec"]["rayClusterSpec"]))
    return out


def test_ray_autoscaler_reads_the_cluster_specs():
    """Ray's own KubeRay translation (what the in-tree autoscaler runs on the head) sees the intended
    resources: no CPUs on the head, one GPU per GPU pod, and the same GPU capacity as our count."""
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    for name, spec in _ray_cluster_specs():
        cfg = _derive_autoscaling_config_from_ray_cr(
            {"metadata": {"name": "t", "namespace": "default"}, "spec": spec}
        )  # also runs Ray's schema validation
        types = cfg["available_node_types"]
        head = types.pop(cfg["head_node_type"])
        assert head["resources"]["CPU"] == 0, name
        gpu = {k: t for k, t in types.items() if t["resources"].get("GPU")}
        assert gpu and all(t["resources"]["GPU"] == 1 for t in gpu.values()), (name, types)
        assert any(
            "GPU" not in t["resources"] and t["resources"]["CPU"] >= 1 for t in types.values()
        ), name
        assert sum(t["max_workers"] for t in gpu.values()) == _gpu_capacity(spec), name
        assert 1 <= cfg["idle_timeout_minutes"] <= 30, name


def job_abs_paths(cmd: JobCommand) -> list[str]:
    """Absolute filesystem paths a job depends on: in its arguments and in the config it names."""
    paths = [a for a in cmd.args if a.startswith("/")]
    if "--config" in cmd.args:
        cfg = REPO / cmd.args[cmd.args.index("--config") + 1]
        if cfg.is_file():
            values: list[str] = []
            _yaml_strings(yaml.safe_load(cfg.read_text()), values)
            paths += [v for v in values if v.startswith("/")]
    return paths


def unmounted_paths(origin: str, spec: dict, paths: list[str]) -> list[str]:
    """Paths that some Ray container (head or worker) of ``spec`` has no volume mounted for."""
    problems = []
    for where, pod, _ in _pod_specs(spec):
        for c in pod["containers"]:
            mounts = [m["mountPath"].rstrip("/") for m in c.get("volumeMounts", [])]
            for p in paths:
                if not any(p == m or p.startswith(m + "/") for m in mounts):
                    problems.append(f"{origin}: {where} has no volume mounted for {p}")
    return problems


def test_rayjob_paths_lie_on_mounted_volumes():
    """Driver (head) and workers must all see the base weights, adapters and summaries they name."""
    problems, n = [], 0
    for f in sorted(KUBERAY.glob("rayjob-*.yaml")):
        for d in _docs(f):
            spec = d["spec"]
            for c in extract_commands(f.name, spec["entrypoint"], workdirs=_workdirs()):
                paths = job_abs_paths(c)
                n += len(paths)
                problems += unmounted_paths(f.name, spec["rayClusterSpec"], paths)
    assert n >= 3
    assert not problems, "\n".join(problems)
    spec = _docs(KUBERAY / "raycluster.yaml")[0]["spec"]
    assert unmounted_paths("x", spec, ["/mnt/shared/a", "/mnt/models/b"]) == []
    assert len(unmounted_paths("x", spec, ["/mnt/elsewhere/base"])) == 1 + len(
        spec["workerGroupSpecs"]
    )


def test_map_job_uses_the_base_the_adapters_were_trained_on():
    wd = _workdirs()
    train = [
        c
        for f in KUBERAY.glob("rayjob-*.yaml")
        for d in _docs(f)
        for c in extract_commands(f.name, d["spec"]["entrypoint"], workdirs=wd)
        if c.script == "jobs/train.py"
    ]
    maps = [
        c
        for f in KUBERAY.glob("rayjob-*.yaml")
        for d in _docs(f)
        for c in extract_commands(f.name, d["spec"]["entrypoint"], workdirs=wd)
        if c.script == "jobs/map_region.py"
    ]
    assert train and maps
    cfg = yaml.safe_load((REPO / train[0].args[train[0].args.index("--config") + 1]).read_text())
    for m in maps:
        assert "--base" in m.args, "the map job must name the SD base the adapters were trained on"
        assert m.args[m.args.index("--base") + 1] == cfg["base"]


def test_dockerfiles():
    pins, tag = _pins(), _python_tag()
    extras = _pyproject()["project"]["optional-dependencies"]
    for flavour in ("cpu", "gpu"):
        d = _dockerfile(flavour)
        assert d["from"] == [f"rayproject/ray:{pins['ray']}-{tag}-{flavour}"], d["from"]
        for src, _ in d["copies"]:
            assert (REPO / src).exists(), f"Dockerfile.{flavour} copies missing {src}"
        assert f"torch=={pins['torch']}" in d["text"]
        assert ("[gpu]" in d["text"]) == (flavour == "gpu"), flavour
    assert "gpu" in extras


def test_cluster_launcher_aws():
    from ray.autoscaler._private.util import prepare_config, validate_config

    pins = _pins()
    c = yaml.safe_load((INFRA / "aws" / "cluster-gpu.yaml").read_text())
    validate_config(
        prepare_config(c)
    )  # the offline part of `ray up`: Ray's schema and node-type rules
    bad = yaml.safe_load((INFRA / "aws" / "cluster-gpu.yaml").read_text())
    bad["available_node_types"]["cpu.worker"]["min_workers"] = "two"
    with pytest.raises(Exception, match="two"):
        validate_config(prepare_config(bad))
    assert c["provider"]["type"] == "aws"
    types = c["available_node_types"]
    head = types[c["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert c["docker"]["image"].endswith(f"lssr-ray:{pins['lssr-ray']}-gpu")
    gpu_types = []
    for name, t in types.items():
        assert "Arn" in t["node_config"]["IamInstanceProfile"], name  # S3 via instance profile
        if name == c["head_node_type"]:
            continue
        assert 0 <= t["min_workers"] <= t["max_workers"] <= c["max_workers"], name
        if re.match(r"(g5|g6|g6e|p4d|p4de|p5|p5e)\.", t["node_config"]["InstanceType"]):
            gpu_types.append(t["node_config"]["InstanceType"].split(".")[0])
    assert {"g5", "p4d", "p5"} <= set(gpu_types), gpu_types
    assert any("--autoscaling-config" in cmd for cmd in c["head_start_ray_commands"])


def test_runtime_env_package_holds_the_code(tmp_path):
    """Build the working_dir zip with Ray's own packaging code and look inside it."""
    from ray._private.runtime_env import packaging

    renv = yaml.safe_load((INFRA / "runtime_env.yaml").read_text())
    assert not set(renv) - RUNTIME_ENV_KEYS, set(renv)
    wd = (REPO / renv["working_dir"]).resolve()
    assert wd == REPO
    zpath = tmp_path / "pkg.zip"
    packaging.create_package(
        str(wd), zpath, include_gitignore=True, excludes=renv.get("excludes", [])
    )
    names = set(zipfile.ZipFile(zpath).namelist())
    code = {
        str(p.relative_to(REPO))
        for p in (REPO / "lssr_ray").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert code and not code - names, sorted(code - names)[:5]
    for p in (REPO / "jobs").glob("*.py"):
        assert str(p.relative_to(REPO)) in names
    assert not [
        n for n in names if n.startswith(("data/samples/", ".venv/", ".git/", "runs/", "out/"))
    ]
    # repository paths that configs name (base weights, pairs) travel with the job
    for cfg in (REPO / "configs").glob("*.yaml"):
        values: list[str] = []
        _yaml_strings(yaml.safe_load(cfg.read_text()), values)
        for v in values:
            if re.match(r"^[\w-]+/[\w./-]+$", v) and (REPO / v).exists():
                assert any(n == v or n.startswith(v.rstrip("/") + "/") for n in names), (
                    cfg.name,
                    v,
                )
    size = zpath.stat().st_size
    assert size < packaging.PACKAGE_SIZE_WARNING, size


def test_runtime_env_check_catches_an_unanchored_exclude(tmp_path):
    """A bare ``data/`` pattern drops lssr_ray/data/ too: the package check above must notice."""
    from ray._private.runtime_env import packaging

    zpath = tmp_path / "pkg.zip"
    packaging.create_package(
        str(REPO), zpath, include_gitignore=True, excludes=["/.venv/", "/.git/", "data/"]
    )
    names = set(zipfile.ZipFile(zpath).namelist())
    code = {str(p.relative_to(REPO)) for p in (REPO / "lssr_ray" / "data").glob("*.py")}
    assert code and not code & names


def test_readme_walks_from_laptop_to_cluster():
    text = (INFRA / "README.md").read_text()
    assert re.search(r"^#+ Scaling out", text, flags=re.MULTILINE)
    cmds = extract_commands("infra/README.md", text, workdirs=_workdirs())
    assert any(c.script == "jobs/train.py" for c in cmds)
    assert any(c.script == "jobs/map_region.py" and "examples/iowa.geojson" in c.args for c in cmds)


# ----------------------------------------------------------------------------------------------
# the checks can fail: run them on small wrong inputs
# ----------------------------------------------------------------------------------------------
BAD_MANIFEST = """\
apiVersion: ray.io/v1
kind: RayJob
metadata: {name: bad}
spec:
  entrypoint: >-
    python jobs/train.py --config configs/train_cpu.yaml --bogus-flag 3
  runtimeEnvYAML: |
    working_dir: .
# ray job submit -- python jobs/train.py --config configs/nope.yaml --max-step 5 \\
#   --num-workers two && echo done
# python jobs/no_such_job.py --aoi examples/iowa.geojson
"""


def test_checker_reports_wrong_flags_paths_and_values():
    cmds = extract_commands("bad.yaml", BAD_MANIFEST)
    assert [c.script for c in cmds] == ["jobs/train.py", "jobs/train.py", "jobs/no_such_job.py"]
    assert cmds[1].args[-2:] == ("--num-workers", "two")  # continuation joined, stops at &&
    problems = "\n".join(check_commands(cmds))
    assert "has no option --bogus-flag" in problems
    assert "has no option --max-step " in problems  # argparse would accept the abbreviation
    assert "configs/nope.yaml does not exist" in problems
    assert "invalid int value: 'two'" in problems
    assert "jobs/no_such_job.py does not exist" in problems
    good = extract_commands(
        "good.sh", "python jobs/train.py --config configs/train_gpu.yaml --max-steps 5"
    )
    assert [p for p in check_commands(good) if "train_gpu" not in p] == []


def test_checker_reports_versions_secrets_and_structure():
    pins = _pins()
    bad = (
        "FROM rayproject/ray:2.59.0-py311-gpu\nRUN pip install torch==2.12.0 'ray[data]==2.60.0'\n"
        "image: registry.example.com/lssr/lssr-ray:0.0.9-gpu\n"
    )
    v = "\n".join(check_versions("bad", bad, pins, "py311"))
    assert (
        "2.59.0-py311-gpu" in v
        and "torch==2.12.0" in v
        and "0.0.9-gpu" in v
        and "ray[data]" not in v
    )
    key = "AKIA" + "ABCDEFGHIJ234567"
    s = find_secrets(
        "bad", f"AWS_ACCESS_KEY_ID: {key}\naws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCY\n"
    )
    assert len(s) == 2
    assert (
        find_secrets("ok", 'AWS_SECRET_ACCESS_KEY: "<REPLACE_ME>"\nx="$AWS_SECRET_ACCESS_KEY"')
        == []
    )
    spec = _docs(KUBERAY / "raycluster.yaml")[0]["spec"]
    spec["headGroupSpec"]["rayStartParams"].pop("num-cpus")
    spec["workerGroupSpecs"][0]["minReplicas"] = 9
    spec["enableInTreeAutoScaling"] = spec.pop(
        "enableInTreeAutoscaling"
    )  # a typo the API server would drop
    spec["workerGroupSpecs"] = [g for g in spec["workerGroupSpecs"] if g["groupName"] != "gpu"] + [
        g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"
    ]
    gpu = spec["workerGroupSpecs"][-1]["template"]["spec"]
    gpu["containers"][0]["envFrom"] = []
    gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 2
    p = "\n".join(
        check_cluster_spec(
            "bad", spec, pins=pins, sa="lssr-ray", secret="lssr-s3-credentials", pvc="lssr-shared"
        )
    )
    assert "num-cpus" in p and "minReplicas <= replicas" in p and "envFrom secretRef" in p
    assert "nvidia.com/gpu: 1" in p
    assert (
        "unknown spec fields ['enableInTreeAutoScaling']" in p
        and "enableInTreeAutoscaling must be true" in p
    )


@pytest.mark.parametrize(
    "line, script",
    [
        (
            "ray job submit --working-dir . -- python jobs/train.py --config configs/train_cpu.yaml",
            "jobs/train.py",
        ),
        (
            "cd /home/ray/lssr-ray && python3 /home/ray/lssr-ray/jobs/map_region.py --aoi x",
            "jobs/map_region.py",
        ),
        ("python -m pytest tests", None),
    ],
)
def test_extraction_forms(line, script):
    cmds = extract_commands("x.md", line, workdirs=("/home/ray/lssr-ray",))
    assert [c.script for c in cmds] == ([script] if script else [])
