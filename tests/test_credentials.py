"""Earthdata credentials scoped per URL, and read failures told apart, against real loopback
servers: an https archive stand-in (tests/http_archive.py: 401/403/404/503-then-200, redirects,
an s3credentials endpoint) read through GDAL, and moto with IAM checks on for S3."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lssr_ray import credentials, fileio
from lssr_ray.data import s3server
from lssr_ray.data.readers import read_raster
from lssr_ray.errors import (
    AuthenticationError,
    MissingDataError,
    MissingObjectError,
    TransientReadError,
    read_skip_reason,
)

TOKEN = "edl-token-planted-7f3a9c"
NO_NETRC = {"NETRC": "/nonexistent/netrc"}


@dataclass
class Archive:
    url: str
    port: int
    root: Path
    log: Path

    def requests(self, needle: str) -> list[dict]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [r for r in map(json.loads, lines) if needle in r["path"]]


@pytest.fixture(scope="module")
def archive(tmp_path_factory, l30_granule):
    root = tmp_path_factory.mktemp("https_archive")
    shutil.copy(l30_granule.assets["B04"], root / "B04.tif")
    for href in l30_granule.assets.values():
        shutil.copy(href, root / Path(href).name)
    port = s3server.free_port()
    log = root / "requests.jsonl"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("http_archive.py")),
                             str(port), str(root), str(log), TOKEN])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield Archive(f"http://127.0.0.1:{port}", port, root, log)
    finally:
        proc.terminate()
        proc.wait(10)


def _configure(archive: Archive, monkeypatch, **extra: str) -> dict[str, str]:
    env = {**NO_NETRC, credentials.HTTPS_PREFIXES_ENV: archive.url,
           credentials.S3CREDENTIALS_URL_ENV: f"{archive.url}/s3credentials", **extra}
    for k in (credentials.EARTHDATA_TOKEN_ENV, credentials.EARTHDATA_TOKEN_FILE_ENV):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    credentials.configure_archive_access()
    return env


@pytest.fixture
def unconfigure():
    yield
    credentials.configure_archive_access(NO_NETRC)  # no token: every registered prefix is dropped


def _read(url: str, g) -> np.ndarray:
    return read_raster(url, g.crs, transform=g.transform, shape=g.shape)


def _local(g) -> np.ndarray:
    return _read(g.assets["B04"], g)


def test_bearer_token_goes_to_the_archive_prefix_only(archive, l30_granule, monkeypatch, unconfigure):
    _configure(archive, monkeypatch, EARTHDATA_TOKEN=TOKEN)
    np.testing.assert_array_equal(_read(f"{archive.url}/auth/B04.tif?t=bearer", l30_granule), _local(l30_granule))
    assert {r["auth"] for r in archive.requests("/auth/B04.tif?t=bearer")} == {f"Bearer {TOKEN}"}
    # the archive redirects to another host (signed S3 URLs): the token is not sent there
    np.testing.assert_array_equal(_read(f"{archive.url}/redirect/B04.tif?t=redir", l30_granule),
                                  _local(l30_granule))
    hops = archive.requests("B04.tif?t=redir")
    assert {r["host"].split(":")[0] for r in hops} == {"127.0.0.1", "localhost"}
    assert all(r["auth"] is None for r in hops if r["host"].startswith("localhost"))
    # a URL outside the configured prefix never sees it
    _read(f"http://localhost:{archive.port}/public/B04.tif?t=other", l30_granule)
    assert [r["auth"] for r in archive.requests("?t=other")] and all(
        r["auth"] is None for r in archive.requests("?t=other"))
    # fsspec never gets GDAL's options; the token is listed for redaction
    assert fileio.settings_for(f"{archive.url}/auth/B04.tif") == {}
    assert TOKEN in fileio.secret_values()


def test_401_and_403_stop_with_an_authentication_error_naming_the_fix(archive, l30_granule, monkeypatch,
                                                                      unconfigure):
    _configure(archive, monkeypatch)  # no token, no netrc
    with pytest.raises(AuthenticationError, match="authentication failed.*EARTHDATA_TOKEN"):
        _read(f"{archive.url}/auth/B04.tif?t=401", l30_granule)
    _configure(archive, monkeypatch, EARTHDATA_TOKEN=TOKEN)
    with pytest.raises(AuthenticationError, match="403") as err:
        _read(f"{archive.url}/403/B04.tif", l30_granule)
    assert TOKEN not in str(err.value)
    assert not isinstance(err.value, MissingDataError)  # never a chip skip


def test_missing_object_and_transient_errors_are_told_apart(archive, l30_granule, monkeypatch, unconfigure):
    _configure(archive, monkeypatch, EARTHDATA_TOKEN=TOKEN)
    with pytest.raises(MissingObjectError, match="does not exist"):
        _read(f"{archive.url}/404/B04.tif", l30_granule)
    # 503 twice, then the file: GDAL's retries with backoff read it
    np.testing.assert_array_equal(_read(f"{archive.url}/flaky/B04.tif?t=flaky", l30_granule), _local(l30_granule))
    assert len(archive.requests("/flaky/B04.tif?t=flaky")) >= 3
    t0 = time.perf_counter()
    with pytest.raises(TransientReadError, match="--resume") as err:
        _read(f"{archive.url}/down/B04.tif", l30_granule)
    assert len(archive.requests("/down/B04.tif")) == 1 + int(fileio.gdal_options()["GDAL_HTTP_MAX_RETRY"])
    assert time.perf_counter() - t0 < 15
    assert read_skip_reason([err.value]) == "transient_read"
    assert read_skip_reason([MissingObjectError("x")]) == "missing_object"
    assert read_skip_reason([MissingObjectError("x"), err.value]) == "transient_read"  # a retry may fill it
    assert read_skip_reason([MissingObjectError("x"), MissingDataError("x")]) == "corrupt_source"
    assert read_skip_reason([]) == "missing_granule"


def test_s3_keys_are_cached_and_refreshed_before_they_expire(archive):
    (archive.root / "keys.json").write_text(json.dumps([["AKIAFIRST", "secret-1", "session-1"],
                                                       ["AKIASECOND", "secret-2", "session-2"]]))
    now = [time.time()]
    provider = credentials.S3CredentialProvider(f"{archive.url}/s3credentials", token=TOKEN,
                                                clock=lambda: now[0], refresh_margin_s=300)
    assert provider("s3://lp-prod-protected/a") == {"key": "AKIAFIRST", "secret": "secret-1", "token": "session-1"}
    now[0] += 3600 - 310  # 5 min 10 s before expiry: still cached
    assert provider("s3://lp-prod-protected/b")["key"] == "AKIAFIRST" and provider.fetches == 1
    now[0] += 20  # inside the 5 min margin: fetched again before the keys expire
    assert provider("s3://lp-prod-protected/c")["key"] == "AKIASECOND" and provider.fetches == 2
    hits = archive.requests("/s3credentials")
    assert len(hits) == 2 and {r["auth"] for r in hits} == {f"Bearer {TOKEN}"}
    wrong = credentials.S3CredentialProvider(f"{archive.url}/s3credentials", token="not-the-token")
    with pytest.raises(AuthenticationError, match="HTTP 401.*EARTHDATA_TOKEN") as err:
        wrong("s3://lp-prod-protected/a")
    assert "not-the-token" not in str(err.value)


def test_https_read_through_the_earthdata_login_redirect_flow_with_netrc(archive, l30_granule, tmp_path,
                                                                         monkeypatch, unconfigure):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine localhost login me password pw\n")
    netrc.chmod(0o600)
    _configure(archive, monkeypatch, NETRC=str(netrc), LSSR_EARTHDATA_LOGIN_URL=f"http://localhost:{archive.port}")
    Path(credentials.https_gdal_options()["GDAL_HTTP_COOKIEJAR"]).unlink(missing_ok=True)  # no session yet
    np.testing.assert_array_equal(_read(f"{archive.url}/edl/B04.tif?t=netrc", l30_granule), _local(l30_granule))
    hops = [r for r in map(json.loads, archive.log.read_text().splitlines()) if "t=netrc" in r["path"]]
    assert [r["path"].split("?")[0] for r in hops[:3]] == ["/edl/B04.tif", "/oauth/authorize", "/login-callback"]
    # the netrc login is not sent before the archive asks for it, and reaches the login host; curl
    # (libcurl 8.16) then also sends it to the original (archive) host on the redirects back
    assert hops[0]["auth"] is None and hops[1]["auth"] is not None


def test_s3_keys_through_the_earthdata_login_redirect_flow_with_netrc(archive, tmp_path):
    (archive.root / "keys.json").write_text(json.dumps([["AKIANETRC", "secret-n", "session-n"]]))
    netrc = tmp_path / "netrc"
    netrc.write_text("machine localhost login me password pw\n")
    netrc.chmod(0o600)
    assert credentials.earthdata_netrc({"NETRC": str(netrc)}) is None  # not an Earthdata Login entry
    provider = credentials.S3CredentialProvider(f"{archive.url}/s3credentials-login", netrc_file=netrc,
                                                login_url=f"http://localhost:{archive.port}")
    assert provider("s3://lp-prod-protected/a")["key"] == "AKIANETRC"
    hops = [r for r in map(json.loads, archive.log.read_text().splitlines())
            if r["path"].startswith(("/s3credentials-login", "/oauth", "/login-callback")) and "/edl/" not in r["path"]]
    assert [r["path"].split("?")[0] for r in hops] == ["/s3credentials-login", "/oauth/authorize",
                                                       "/login-callback", "/s3credentials-login"]
    # the password goes to the login host only; the archive host gets the cookie, never the login
    assert [r["auth"] is not None for r in hops] == [False, True, False, False]
    bad = tmp_path / "bad"
    bad.write_text("machine localhost login me password wrong\n")
    bad.chmod(0o600)
    with pytest.raises(AuthenticationError, match="HTTP 401"):
        credentials.S3CredentialProvider(f"{archive.url}/s3credentials-login", netrc_file=bad,
                                         login_url=f"http://localhost:{archive.port}")("s3://x/a")


@pytest.fixture
def iam_s3(monkeypatch):
    """moto with IAM checks on (after 11 setup calls): bucket ``archive`` readable only with the
    ``reader`` keys, bucket ``user-out`` writable only with the ``writer`` keys."""
    import boto3

    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "11")  # read by the moto subprocess at start
    srv = s3server.start()
    monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
    try:
        kw = {"endpoint_url": srv.endpoint_url, "region_name": "us-east-1"}
        admin = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        s3 = boto3.client("s3", **kw, **admin)
        iam = boto3.client("iam", **kw, **admin)
        for b in ("archive", "user-out"):
            s3.create_bucket(Bucket=b)
        keys = {}
        for user, bucket, actions in (("reader", "archive", ["s3:GetObject", "s3:ListBucket"]),
                                      ("writer", "user-out", ["s3:*"])):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": [
                    f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
            k = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (k["AccessKeyId"], k["SecretAccessKey"])
        yield srv, keys, s3
    finally:
        s3server.stop(srv)


def test_archive_bucket_uses_issued_keys_and_the_output_bucket_its_own(archive, iam_s3, l30_granule,
                                                                       monkeypatch, unconfigure):
    import boto3

    srv, keys, setup = iam_s3
    for name in ("B04.tif", "wrong-key.tif", "other-identity.tif"):  # calls 9-11; GDAL caches per URL
        setup.put_object(Bucket="archive", Key=name, Body=Path(l30_granule.assets["B04"]).read_bytes())
    for k, v in s3server.s3_env(srv.endpoint_url).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["writer"][0])  # the user's own identity, for --out
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["writer"][1])
    (archive.root / "keys.json").write_text(json.dumps([[*keys["reader"], ""]]))
    _configure(archive, monkeypatch, EARTHDATA_TOKEN=TOKEN, LSSR_ARCHIVE_S3_PREFIXES="s3://archive")
    # moto enforces the policies: each identity is refused on the other bucket
    kw = {"endpoint_url": srv.endpoint_url, "region_name": "us-east-1"}
    writer = boto3.client("s3", aws_access_key_id=keys["writer"][0], aws_secret_access_key=keys["writer"][1], **kw)
    with pytest.raises(Exception, match="AccessDenied"):
        writer.get_object(Bucket="archive", Key="B04.tif")

    np.testing.assert_array_equal(_read("s3://archive/B04.tif", l30_granule), _local(l30_granule))  # GDAL
    fs, path = fileio.filesystem("s3://archive/B04.tif")  # s3fs
    assert fs.cat_file(path) == Path(l30_granule.assets["B04"]).read_bytes()
    fileio.atomic_put("s3://user-out/run/x.bin", b"mine")  # the environment's (writer's) keys
    assert writer.get_object(Bucket="user-out", Key="run/x.bin")["Body"].read() == b"mine"
    assert fileio.settings_for("s3://user-out/x").get("key") is None  # no archive key leaks to it
    assert fileio.settings_for("s3://archive/x")["key"] == keys["reader"][0]

    with pytest.raises(MissingObjectError):
        _read("s3://archive/nope.tif", l30_granule)
    fileio.register_storage("s3://archive", credentials=lambda url: {"key": "AKIAWRONG0000", "secret": "wrong"})
    with pytest.raises(AuthenticationError, match="authentication failed.*EARTHDATA_TOKEN"):
        _read("s3://archive/wrong-key.tif", l30_granule)
    fileio.register_storage("s3://archive", credentials=lambda url: {"key": keys["writer"][0],
                                                                      "secret": keys["writer"][1]})
    with pytest.raises(AuthenticationError, match="Access Denied"):
        _read("s3://archive/other-identity.tif", l30_granule)


def test_token_file_and_netrc_are_read_from_the_node(tmp_path):
    tok = tmp_path / "token"
    tok.write_text(f"{TOKEN}\n")
    assert credentials.earthdata_token({credentials.EARTHDATA_TOKEN_FILE_ENV: str(tok)}) == TOKEN
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {credentials.EARTHDATA_LOGIN_HOST} login me password pw\n")
    netrc.chmod(0o600)
    opts = credentials.https_gdal_options({"NETRC": str(netrc)})
    assert opts["GDAL_HTTP_NETRC_FILE"] == str(netrc) and opts["GDAL_HTTP_COOKIEJAR"]
    assert "GDAL_HTTP_BEARER" not in opts
    other = tmp_path / "other"
    other.write_text("machine example.com login me password pw\n")
    other.chmod(0o600)
    assert credentials.https_gdal_options({"NETRC": str(other)}) == {}


def _aoi_in(g):
    """A 600 m square AOI 300 m inside the granule's corner."""
    from lssr_ray.data.aoi import box_aoi, parse_aoi

    x0, y1 = g.transform.c + 300, g.transform.f - 300
    return parse_aoi(box_aoi((x0, y1 - 600, x0 + 600, y1), g.crs))


def _granule_on(archive: Archive, g, band_mode: str, tag: str):
    """``g`` with every asset on the loopback archive (``public``), band B03 served by ``band_mode``."""
    assets = {k: f"{archive.url}/{band_mode if k == 'B03' else 'public'}/{Path(v).name}?t={tag}"
              for k, v in g.assets.items()}
    return dataclasses.replace(g, assets=assets)


@pytest.mark.parametrize("mode,reason", [("404", "missing_object"), ("down", "transient_read")])
def test_read_chips_records_the_skip_reason_of_the_failure(archive, l30_granule, mode, reason, monkeypatch,
                                                           unconfigure):
    from lssr_ray.config import GridConfig
    from lssr_ray.data.grid import plan_chips
    from lssr_ray.mapping.udfs import ReadChips

    _configure(archive, monkeypatch)
    g = _granule_on(archive, l30_granule, mode, f"chips-{mode}")
    plan = plan_chips(_aoi_in(g), config=GridConfig(chip_size=32, overlap=4), anchor=(15.0, 15.0))
    rows = ReadChips(plan, [g])({"chips": np.asarray([",".join(c.id for c in plan.chips)]),
                                 "ti": np.asarray([0]), "granules": np.asarray([g.id])})
    assert list(rows["status"]) == ["skipped"] * len(plan.chips)
    assert set(rows["reason"]) == {reason} and all("B03" in d for d in rows["detail"])


def test_read_chips_stops_on_an_authentication_failure(archive, l30_granule, monkeypatch, unconfigure):
    from lssr_ray.config import GridConfig
    from lssr_ray.data.grid import plan_chips
    from lssr_ray.mapping.udfs import ReadChips

    _configure(archive, monkeypatch)  # no token: the archive answers 401
    g = _granule_on(archive, l30_granule, "auth", "chips-auth")
    plan = plan_chips(_aoi_in(g), config=GridConfig(chip_size=32, overlap=4), anchor=(15.0, 15.0))
    with pytest.raises(AuthenticationError, match="EARTHDATA_TOKEN"):
        ReadChips(plan, [g])({"chips": np.asarray([plan.chips[0].id]), "ti": np.asarray([0]),
                              "granules": np.asarray([g.id])})


def test_map_job_stops_with_an_authentication_error_naming_the_fix(archive, tmp_path, monkeypatch, capsys,
                                                                     unconfigure):
    """The bundled catalog with its HLS assets behind the loopback archive (401 without a token)."""
    import importlib.util

    from lssr_ray.config import REPO_ROOT

    bundle = REPO_ROOT / "data" / "archive"
    served = archive.root / "bundle"
    if not served.exists():
        shutil.copytree(bundle, served)
    cat = tmp_path / "archive"
    shutil.copytree(bundle, cat)
    for item in [*cat.glob("HLSL30/*/*.json"), *cat.glob("HLSS30/*/*.json")]:
        d = json.loads(item.read_text())
        for asset in d.get("assets", {}).values():
            rel = (item.parent / asset["href"]).resolve().relative_to(cat.resolve())
            asset["href"] = f"{archive.url}/auth/bundle/{rel.as_posix()}?t=job"
        item.write_text(json.dumps(d))
    _configure(archive, monkeypatch)  # no token, no netrc
    spec = importlib.util.spec_from_file_location("map_region_job", REPO_ROOT / "jobs" / "map_region.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = tmp_path / "fl.zarr"
    rc = job.main(["--aoi", str(REPO_ROOT / "examples" / "flanders_31UDS.geojson"), "--catalog", str(cat / "catalog.json"),
                   "--start", "2018-07-01", "--end", "2018-07-23", "--engine", "bicubic", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and "authentication failed" in err and "EARTHDATA_TOKEN" in err, err[-2000:]
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert archive.requests("?t=job") and all(r["auth"] is None for r in archive.requests("?t=job"))


def test_a_worker_without_credentials_for_the_output_gets_an_authentication_error(s3_bucket, monkeypatch):
    from lssr_ray.mapping.udfs import CommitPartials

    url, options, _ = s3_bucket
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find here
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    fresh = {"endpoint_url": options["endpoint_url"].replace("127.0.0.1", "localhost")}  # not a cached s3fs
    batch = {"chip_id": np.asarray(["r0000c0000"]), "ti": np.asarray([0]), "status": np.asarray(["skipped"]),
             "reason": np.asarray(["nodata"]), "detail": np.asarray([""]), "granules": np.asarray([""]),
             "window": np.zeros((1, 4), np.int64), "read_s": np.zeros(1), "infer_s": np.zeros(1)}
    with pytest.raises(AuthenticationError, match="not sent to workers.*instance or pod role"):
        CommitPartials(f"{url}/out.zarr", storage_options=fresh)(batch)
