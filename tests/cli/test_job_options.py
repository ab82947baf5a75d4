"""The job command lines are generated from the config dataclasses: every field is an option with
its docstring as help, the parsed defaults rebuild an equal config, and the old flag names work."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from lssr_ray.cli import evaluate, map_region, search_hls, train, train_classifier
from lssr_ray.cli.args import config_from_args, config_values
from lssr_ray.config import REPO_ROOT, GridConfig, MapConfig, TrainConfig, field_help, field_types
from lssr_ray.errors import ConfigError

FLANDERS = str(REPO_ROOT / "examples" / "flanders_31UDS.geojson")

# job module, its config class, argv with the required fields, fields left off the command line
JOBS = {
    "map_region": (map_region, MapConfig, ["--aoi", FLANDERS], {"output_resolution", "scale"}),
    "evaluate": (evaluate, evaluate.EvalConfig, [], set()),
    "train_classifier": (train_classifier, train_classifier.ClassifierJobConfig,
                         ["--patch", "p", "--out", "o", "--compare"], set()),
    "search_hls": (search_hls, search_hls.SearchConfig,
                   ["--aoi", "a.geojson", "--start", "2021-06-01", "--end", "2021-06-30", "--out", "o"], set()),
}


def _leaf_fields(cls, prefix=""):
    """(owner class, field name) of every non-dataclass field, nested configs flattened."""
    for f in dataclasses.fields(cls):
        kind = field_types(cls)[f.name]
        if dataclasses.is_dataclass(kind):
            yield from _leaf_fields(kind)
        else:
            yield cls, f.name


def _flag(mod, name):
    return getattr(mod, "FLAGS", {}).get(name, "--" + name.replace("_", "-"))


def _words(text: str) -> str:
    """Text as plain words (Sphinx roles, quotes and punctuation dropped; line wrapping ignored)."""
    return " ".join(re.sub(r"[^\w ]", " ", re.sub(r":\w+:", " ", text)).split())


@pytest.mark.parametrize("job", [*JOBS, "train"])
def test_help_lists_every_config_field_with_its_help(job):
    """``python jobs/<job>.py --help`` (the wrapper `ray job submit` runs) shows each field's docstring."""
    mod, cls, _, skipped = JOBS.get(job, (train, TrainConfig, [], set()))
    out = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / f"{job}.py"), "--help"],
                         capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
    text = _words(out)
    for owner, name in _leaf_fields(cls):
        if name in skipped:
            assert _flag(mod, name) + " " not in out, name
            continue
        helptext = field_help(owner)[name]
        assert helptext, f"{owner.__name__}.{name} has no docstring"
        assert _flag(mod, name) in out, f"{job}: no option for {name}"
        first_words = " ".join(_words(helptext).split()[:8])
        assert first_words in text, f"{job} --help lacks the help of {name}: {first_words!r}"


@pytest.mark.parametrize("job", list(JOBS))
def test_parsed_defaults_rebuild_an_equal_config(job):
    mod, cls, argv, _ = JOBS[job]
    cfg = config_from_args(mod.build_parser().parse_args(argv), cls)
    required = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    extra = {"compare": True, "patch": "p"} if job == "train_classifier" else {}
    assert cfg == cls(**required, **extra)


def test_train_defaults_round_trip_and_options_override_the_yaml(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    assert train.build_config(train.parse_args(["--config", str(empty)])) == TrainConfig()
    args = train.parse_args(["--config", str(empty), "--chip-size", "24", "--no-augment", "--precision", "fp32",
                             "--train-sensor-pairs", "S2deg-S2,L8-S2", "--model", "{timestep: 5}"])
    assert config_values(args, TrainConfig) == {"chip_size": 24, "augment": False, "precision": "fp32",
                                                "train_sensor_pairs": ("S2deg-S2", "L8-S2"),
                                                "model": {"timestep": 5}}
    cfg = train.build_config(args)
    assert (cfg.chip_size, cfg.augment, cfg.train_sensor_pairs, cfg.model) == (24, False, ("S2deg-S2", "L8-S2"),
                                                                                {"timestep": 5})


def test_map_options_fill_the_nested_grid_and_keep_the_old_flag_names():
    a = map_region.parse_args(["--aoi", FLANDERS, "--chip-size", "16", "--overlap", "4", "--actors", "2",
                               "--no-quicklook", "--no-resume", "--uncertainty", "--engine", "bicubic"])
    cfg = config_from_args(a, MapConfig)
    assert cfg.grid == GridConfig(chip_size=16, overlap=4)
    assert (cfg.num_actors, cfg.quicklook, cfg.resume, cfg.uncertainty, cfg.engine) == (2, False, False, True, "bicubic")
    with pytest.raises(SystemExit):
        map_region.parse_args(["--aoi", FLANDERS, "--engine", "nope"])
    with pytest.raises(ConfigError, match="overlap must be an even number"):
        config_from_args(map_region.parse_args(["--aoi", FLANDERS, "--overlap", "3"]), MapConfig)


def test_map_config_from_dict_takes_the_nested_grid_and_names_bad_keys():
    cfg = MapConfig.from_dict({"aoi": "a.geojson", "grid": {"chip_size": 32, "overlap": 4}})
    assert cfg.grid == GridConfig(chip_size=32, overlap=4)
    assert MapConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    with pytest.raises(ConfigError, match="GridConfig: unknown keys \\['chip'\\]"):
        MapConfig.from_dict({"aoi": "a.geojson", "grid": {"chip": 32}})
    with pytest.raises(ConfigError, match="engine must be one of auto, torch"):
        MapConfig(aoi="a.geojson", engine="cuda")


def test_classifier_job_needs_exactly_one_mode(capsys):
    with pytest.raises(SystemExit):
        train_classifier.build_parser().parse_args(["--patch", "p", "--out", "o", "--compare", "--source", "s2"])
    assert train_classifier.main(["--patch", "p", "--out", "o", "--store", "s.zarr"]) == 2
    assert "--store needs --save-model" in capsys.readouterr().err


def test_demo_run_id_is_unchanged():
    """The demo's run id (recorded before the configs were nested) still comes out: same settings hash.

    Pin updated for issue 14: the store format (crop_type _FillValue, overviews, _partials/
    removed when complete) is part of the identity now; without it the old id comes out, so
    nothing else moved."""
    import hashlib
    import json

    from lssr_ray.mapping.pipeline import plan_map

    args = map_region.parse_args(["--aoi", "examples/flanders_31UDS.geojson", "--uncertainty"])  # `make demo`
    plan = plan_map(config_from_args(args, MapConfig))
    assert plan.run_id == "e76894752870b987"
    before = {k: v for k, v in plan.identity.items() if k != "store_format"}
    assert hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16] == "a18ac7d3cb7e6062"
