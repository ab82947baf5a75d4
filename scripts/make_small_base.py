"""Make the project's small SD-architecture stand-in base: models/small-sd-base/.

Same diffusers classes and folder layout as Stable Diffusion 2.1-base (unet/, vae/, scheduler/,
model_index.json) with a small config (lssr_ray.model.base.SMALL_*_CONFIG), pretrained briefly on
the bundled real imagery so that tests and CPU demos run the real code path. It is NOT a
substitute for SD weights: the VAE is a 4-block x8 autoencoder trained for a few minutes, the
UNet had a short epsilon-prediction pretraining on its latents, and the "empty prompt" embedding
is a fixed-seed random tensor standing in for the CLIP text encoder output of "".

Training images (3-band, scaled with lssr_ray.data.normalize, rgb and ir groups alike):
- worldcereal_flanders_31UDS_2018: S2 L2A 10 m B04,B03,B02 and B8A,B11,B12 (20 m, x2 nearest)
  on dates whose SCL is >= 90 % clear (4/5);
- worldcereal_hesbaye_monthly_2021: S2 L2A B04,B03,B02 and B08,B11,B12 monthly composites;
- landsat8_l1t_alabama_2015: L8 TOA reflectance B4,B3,B2 and B5,B6,B7 (30 m).

Usage: python scripts/make_small_base.py [--out models/small-sd-base] [--vae-steps 300]
Deterministic for a given torch build and thread count (seed 0).

``--preset v2`` (models/small-sd-base-v2): a VAE that keeps 10 m detail (downsampling x2, no
mid-block attention, 4 latent channels) and a UNet whose attention sits on its coarser level only;
``--holdout-dates`` drops Flanders scenes within 1 day of those dates (the Sentinel-2 targets of
the real L8-S2 evaluation pairs) from pretraining. The default preset ``small`` is unchanged.

``--preset v3`` (models/small-sd-base-v3, the shipped default): the location hold-out base. It is
pretrained only on sites outside the evaluation hold-out (Flanders, the Tanzania Sentinel-2 20 m
IR bands, the Alabama Landsat scene; never Hesbaye), with an x2 VAE of 8 latent channels so that
its round trip of held-out truth sits well above bicubic, and a UNet whose attention is on its
x4 level only (fast on CPU). The sites used are written to ``pretrain_locations.json`` in the
output folder, so an evaluation can refuse to score a base on ground it was pretrained on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


#: Configs of ``--preset v2``: VAE x2 (block_out_channels of length 2), 4 latent channels.
V2_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 192,
    "mid_block_add_attention": False,  # 96 x 96 latent tokens: full attention costs seconds per chip
}
#: Latent 96 x 96 for a 192 x 192 chip; attention only on the 48 x 48 level.
V2_UNET_CONFIG = {
    "sample_size": 96,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
#: Configs of ``--preset v3``: VAE x2 with 8 latent channels (12 input values per 2 x 2 block -> 8).
V3_VAE_CONFIG = {**V2_VAE_CONFIG, "block_out_channels": (32, 32), "latent_channels": 8}
#: Latent 96 x 96 for a 192 x 192 chip; attention only on the 24 x 24 level (x4 below the latent).
V3_UNET_CONFIG = {
    "sample_size": 96,
    "in_channels": 8,
    "out_channels": 8,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
#: Site ids (sample folder names without the ``worldcereal_`` prefix).
SITE_FLANDERS = "flanders_31UDS_2018"
SITE_HESBAYE = "hesbaye_monthly_2021"
SITE_TANZANIA = "tanzania_37MBS_2021"
SITE_ALABAMA = "landsat8_l1t_alabama_2015"
PRETRAIN_FILE = "pretrain_locations.json"
#: Sentinel-2 dates of the 5 real L8-S2 pairs in data/pairs (their Flanders scenes are held out).
REAL_PAIR_S2_DATES = ("2018-06-30", "2018-07-18", "2018-07-23", "2018-08-02", "2018-10-21")


def _flanders(holdout_dates: tuple[str, ...] = ()) -> list[np.ndarray]:
    from lssr_ray.fileio import open_netcdf

    d = SAMPLES / "worldcereal_flanders_31UDS_2018"
    # raw integers (uint16, 0 = fill, x 1e-4); decoding is done here to keep SCL integer
    s10 = open_netcdf(next(d.glob("S2_L2A_10m_*.nc")), mask_and_scale=False)
    s20 = open_netcdf(next(d.glob("S2_L2A_20m_*.nc")), mask_and_scale=False)
    scl = s20["SCL"].values
    clear = np.isin(scl, (4, 5)).mean(axis=(1, 2)) >= 0.9
    up = lambda a: a.repeat(2, axis=-2).repeat(2, axis=-1)
    rgb = np.stack([s10[b].values for b in ("B04", "B03", "B02")], 1)
    ir = np.stack([up(s20[b].values) for b in ("B8A", "B11", "B12")], 1)
    day = s10["timestamp"].values.astype("datetime64[D]")
    if holdout_dates:
        hd = np.array(holdout_dates, dtype="datetime64[D]")
        near = (np.abs((day[:, None] - hd[None]).astype(int)) <= 1).any(1)
        print(f"flanders: {int((clear & near).sum())} clear scenes held out ({', '.join(hd.astype(str).tolist())})")
        clear = clear & ~near
    six = np.concatenate([rgb, ir], 1)[clear].astype(np.float32)
    six = np.where(six > 0, six * 1e-4, np.nan)
    return [x for x in six]


def _hesbaye() -> list[np.ndarray]:
    from lssr_ray.fileio import open_netcdf

    ds = open_netcdf(SAMPLES / "worldcereal_hesbaye_monthly_2021" / "worldcereal_preprocessed_inputs.nc")
    bands = ("B04", "B03", "B02", "B08", "B11", "B12")
    raw = np.stack([ds[f"S2-L2A-{b}"].values.astype(np.float32) for b in bands], 1)
    six = np.where(raw >= 65535, np.nan, raw * 1e-4)
    return [x for x in six]


def _alabama() -> list[np.ndarray]:
    import rasterio

    d = SAMPLES / "landsat8_l1t_alabama_2015"
    mtl = (d / "l8_MTL.txt").read_text()
    sun = float(re.search(r"SUN_ELEVATION = ([\d.]+)", mtl).group(1))
    out = []
    for b in (4, 3, 2, 5, 6, 7):
        mult = float(re.search(rf"REFLECTANCE_MULT_BAND_{b} = ([-\d.E+]+)", mtl).group(1))
        add = float(re.search(rf"REFLECTANCE_ADD_BAND_{b} = ([-\d.E+]+)", mtl).group(1))
        with rasterio.open(d / f"l8_B{b}.tif") as src:
            dn = src.read(1).astype(np.float32)
        out.append(np.where(dn > 0, (mult * dn + add) / np.sin(np.deg2rad(sun)), np.nan))
    return [np.stack(out)]


def _tanzania() -> list[np.ndarray]:
    """Tanzania S2 L2A 20 m B8A, B11, B12 on >= 90 % clear dates as 6-band scenes with NaN RGB
    (no visible bands at 20 m in the sample): they feed the IR group only."""
    from lssr_ray.fileio import open_netcdf

    d = SAMPLES / "worldcereal_tanzania_37MBS_2021"
    s20 = open_netcdf(next(d.glob("S2_L2A_20m_*.nc")), mask_and_scale=False)
    clear = np.isin(s20["SCL"].values, (4, 5)).mean(axis=(1, 2)) >= 0.9
    ir = np.stack([s20[b].values for b in ("B8A", "B11", "B12")], 1)[clear].astype(np.float32)
    ir = np.where(ir > 0, ir * 1e-4, np.nan)
    return [np.concatenate([np.full_like(x, np.nan), x]) for x in ir]


def load_images(holdout_dates: tuple[str, ...] = (), sites: tuple[str, ...] | None = None) -> list[np.ndarray]:
    """Training scenes as (6, H, W) float32 reflectance, OUTPUT_BANDS order, NaN nodata;
    Flanders scenes within 1 day of ``holdout_dates`` (YYYY-MM-DD) are left out. ``sites``: the
    site ids to use (default: Flanders, Hesbaye, Alabama, the v1/v2 recipe)."""
    loaders = {SITE_FLANDERS: lambda: _flanders(holdout_dates), SITE_HESBAYE: _hesbaye,
               SITE_TANZANIA: _tanzania, SITE_ALABAMA: _alabama}
    sites = sites or (SITE_FLANDERS, SITE_HESBAYE, SITE_ALABAMA)
    return [x for site in sites for x in loaders[site]()]


def sample_crops(scenes, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n random valid size x size 3-band crops, scaled to [-1, 1], rgb and ir groups mixed."""
    from lssr_ray.data.normalize import reflectance_to_image

    out = []
    while len(out) < n:
        s = scenes[rng.integers(len(scenes))]
        h, w = s.shape[1:]
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        g = rng.integers(2)
        crop = s[3 * g : 3 * g + 3, y : y + size, x : x + size]
        if not np.isfinite(crop).all():
            continue
        six = np.zeros((6, size, size), np.float32)
        six[3 * g : 3 * g + 3] = crop
        img = reflectance_to_image(six[None])[0, 3 * g : 3 * g + 3]
        if rng.integers(2):
            img = img[:, :, ::-1]
        out.append(np.rot90(img, rng.integers(4), axes=(1, 2)).copy())
    return np.stack(out).astype(np.float32)


def main() -> None:
    from lssr_ray.config import SMALL_BASE_DIR

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(SMALL_BASE_DIR))
    ap.add_argument("--vae-steps", type=int, default=300)
    ap.add_argument("--unet-steps", type=int, default=300)
    ap.add_argument("--preset", choices=("small", "v2", "v3"), default="small",
                    help="model configs: small (lssr_ray.model.base.SMALL_*_CONFIG) or v2 (x2 VAE, see above)")
    ap.add_argument("--crop", type=int, default=64, help="training crop edge (10 m px)")
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--holdout-dates", default="",
                    help="comma-separated YYYY-MM-DD Flanders dates to leave out, or 'real-pairs' for "
                         "REAL_PAIR_S2_DATES (default: none)")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file

    from lssr_ray.model.base import (
        EMPTY_PROMPT_FILE,
        SD21_SCHEDULER_CONFIG,
        SMALL_UNET_CONFIG,
        SMALL_VAE_CONFIG,
        write_model_index,
    )

    vae_cfg, unet_cfg = {"v2": (V2_VAE_CONFIG, V2_UNET_CONFIG), "v3": (V3_VAE_CONFIG, V3_UNET_CONFIG)}.get(
        args.preset, (SMALL_VAE_CONFIG, SMALL_UNET_CONFIG))
    # v3: location hold-out, Hesbaye is never seen
    sites = (SITE_FLANDERS, SITE_TANZANIA, SITE_ALABAMA) if args.preset == "v3" else None
    hold = REAL_PAIR_S2_DATES if args.holdout_dates == "real-pairs" else tuple(
        d.strip() for d in args.holdout_dates.split(",") if d.strip())
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(0)
    scenes = load_images(hold, sites)
    print(f"{len(scenes)} scenes")

    vae = AutoencoderKL(**vae_cfg)
    opt = torch.optim.Adam(vae.parameters(), lr=args.vae_lr)
    # v3: cosine decay, the last steps at a small rate are what lift the round-trip PSNR
    sched_lr = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.vae_steps) if args.preset == "v3" else None
    t0 = time.time()
    for step in range(args.vae_steps):
        x = torch.from_numpy(sample_crops(scenes, args.vae_batch, args.crop, rng))
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        kl = post.kl().mean() / x[0].numel()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-4 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched_lr is not None:
            sched_lr.step()
        if step % 50 == 0 or step == args.vae_steps - 1:
            print(f"vae {step} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    vae.eval()
    with torch.no_grad():
        x = torch.from_numpy(sample_crops(scenes, 64, args.crop, rng))
        lat = vae.encode(x).latent_dist.mean
        rec = vae.decode(lat).sample
        print(f"vae held-out MAE (image units): {(rec - x).abs().mean().item():.4f}")
        vae.register_to_config(scaling_factor=float(1.0 / lat.std()))

    unet = UNet2DConditionModel(**unet_cfg)
    sched = DDPMScheduler(**SD21_SCHEDULER_CONFIG)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 77, unet_cfg["cross_attention_dim"], generator=g)
    opt = torch.optim.Adam(unet.parameters(), lr=5e-4)
    sf = vae.config.scaling_factor
    for step in range(args.unet_steps):
        with torch.no_grad():
            z = vae.encode(torch.from_numpy(sample_crops(scenes, 32, args.crop, rng))).latent_dist.mean * sf
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, 1000, (z.shape[0],), generator=g)
        pred = unet(sched.add_noise(z, noise, t), t, encoder_hidden_states=emb.expand(len(z), -1, -1)).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.unet_steps - 1:
            print(f"unet {step} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unet.eval().save_pretrained(out / "unet")
    vae.save_pretrained(out / "vae")
    sched.save_pretrained(out / "scheduler")
    save_file({"prompt_embeds": emb.contiguous()}, str(out / EMPTY_PROMPT_FILE))
    write_model_index(out)
    used = sites or (SITE_FLANDERS, SITE_HESBAYE, SITE_ALABAMA)
    (out / PRETRAIN_FILE).write_text(json.dumps(
        {"pretrain_locations": list(used), "flanders_holdout_dates": list(hold),
         "command": " ".join(["python scripts/make_small_base.py", *sys.argv[1:]])}, indent=2) + "\n")
    print(f"saved {out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
