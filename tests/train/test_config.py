"""Every bundled config parses into TrainConfig; bad values are rejected with the valid choices."""

from __future__ import annotations

import pytest

from lssr_ray.config import REPO_ROOT, TrainConfig, load_yaml
from lssr_ray.errors import ConfigError

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_parses(path):
    data = load_yaml(path)
    cfg = TrainConfig.from_dict(data)
    assert cfg.max_steps >= cfg.checkpoint_every
    assert (3 * cfg.chip_size) % 24 == 0  # VAE (x8) and SAR-head windows (12 px)
    from lssr_ray.model.losses import LSSRLoss
    from lssr_ray.model.lssr import LSSRConfig

    LSSRConfig.from_dict(cfg.model)
    if not cfg.loss.get("perceptual_model"):
        LSSRLoss(**cfg.loss)


def test_cpu_and_gpu_configs_say_what_the_issue_asks():
    cpu = TrainConfig.from_dict(load_yaml(REPO_ROOT / "configs" / "train_cpu.yaml"))
    gpu = TrainConfig.from_dict(load_yaml(REPO_ROOT / "configs" / "train_gpu.yaml"))
    assert cpu.num_workers == 2 and cpu.use_gpu == "false" and cpu.num_workers * cpu.cpus_per_worker <= 2
    assert cpu.base == "models/small-sd-base"
    assert gpu.num_workers == 8 and gpu.use_gpu == "true" and gpu.precision in ("auto", "bf16")
    assert "stable-diffusion-2-1-base" in gpu.base and gpu.storage_path.startswith("s3://")
    assert gpu.batch_size * gpu.grad_accum > cpu.batch_size * cpu.grad_accum


@pytest.mark.parametrize(
    "bad, needle",
    [({"use_gpu": "yes"}, "auto, true, false"), ({"precision": "fp8"}, "fp32, bf16, fp16"),
     ({"max_steps": 0}, "max_steps"), ({"learning_rat": 1e-3}, "valid keys")],
)
def test_bad_values_name_the_choices(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig.from_dict(bad)


def test_jobs_train_overrides():
    import lssr_ray.cli.train as mod

    yaml_file = str(REPO_ROOT / "configs" / "train_cpu.yaml")
    cfg = mod.build_config(mod.parse_args(["--config", yaml_file, "--max-steps", "7", "--set", "learning_rate=2e-3",
                                           "--set", "model={modality_dropout: 0.1}"]))
    assert (cfg.max_steps, cfg.learning_rate, cfg.model) == (7, 2e-3, {"modality_dropout": 0.1})
    assert cfg.run_name == TrainConfig.from_dict(load_yaml(yaml_file)).run_name
    with pytest.raises(ConfigError, match="valid keys"):
        mod.build_config(mod.parse_args(["--config", yaml_file, "--set", "bogus=1"]))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        mod.build_config(mod.parse_args(["--config", yaml_file, "--set", "learning_rate"]))
