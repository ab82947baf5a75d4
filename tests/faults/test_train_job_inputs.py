"""jobs/train.py: each bad config / pairs store / storage path is one line, exit code 2, before Ray starts."""

from __future__ import annotations

import sys

import pytest

from lssr_ray.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
from _jobs import load_job

from lssr_ray.errors import LssrError

GOOD = (REPO_ROOT / "configs" / "train_cpu.yaml").read_text()


@pytest.fixture(scope="module")
def job():
    return load_job("train")


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the job gets as far as starting or joining Ray."""
    import ray

    def refuse(*_a, **_k):
        raise AssertionError("ray.init was called: the bad input was not caught before Ray started")

    monkeypatch.setattr(ray, "init", refuse)


def _config(tmp_path, text: str) -> str:
    p = tmp_path / "train.yaml"
    p.write_text(text)
    return str(p)


CASES = {
    "missing config": (lambda t: str(t / "nope.yaml"), [], "config file not found"),
    "malformed yaml": (lambda t: _config(t, "run_name: [unclosed\nmax_steps: 3\n"), [], "malformed YAML at line"),
    "unknown key": (lambda t: _config(t, GOOD + "learnin_rate: 0.1\n"), [], "unknown keys ['learnin_rate']"),
    "list top level": (lambda t: _config(t, "- run_name: x\n- max_steps: 3\n"), [], "top level must be a mapping"),
    "pairs store missing": (lambda t: _config(t, GOOD), ["--set", "pairs=/nonexistent/pairs.zarr"],
                            "pairs: no pairs store at /nonexistent/pairs.zarr"),
    "storage path is a file": (lambda t: _config(t, GOOD), ["--storage-path", "{tmp}/afile/runs"], "is a file, not a folder"),
    "storage path unwritable": (lambda t: _config(t, GOOD), ["--storage-path", "/proc/lssr-runs"], "cannot write there"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_train_input_is_one_line_exit_2_and_ray_never_starts(case, job, no_ray, tmp_path, capsys):
    make_config, extra, message = CASES[case]
    (tmp_path / "afile").write_text("not a folder")
    argv = ["--config", make_config(tmp_path), *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    rc = job.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    assert message in err[0], err[0]


def test_storage_bucket_missing_is_named(job, no_ray, s3_bucket, tmp_path, capsys):
    rc = job.main(["--config", _config(tmp_path, GOOD), "--storage-path", "s3://no-such-bucket-xyz/runs"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bucket 'no-such-bucket-xyz' does not exist" in err[0], err


def test_debug_shows_the_traceback(job, no_ray, tmp_path):
    with pytest.raises(LssrError, match="config file not found"):
        job.main(["--config", str(tmp_path / "nope.yaml"), "--debug"])


def test_good_inputs_pass_the_checks(tmp_path):
    """The bundled config's pairs, base and a fresh storage folder pass (no false alarm)."""
    import yaml

    from lssr_ray.config import TrainConfig
    from lssr_ray.train.preflight import check_train_inputs

    data = yaml.safe_load(GOOD)
    data["storage_path"] = str(tmp_path / "new" / "runs")
    check_train_inputs(TrainConfig.from_dict(data))
    assert (tmp_path / "new" / "runs").is_dir() and not list((tmp_path / "new" / "runs").iterdir())
