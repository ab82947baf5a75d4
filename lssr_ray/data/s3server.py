"""A real S3-compatible HTTP server on loopback (``moto_server`` subprocess) for tests and demos.

``python -m lssr_ray.data.s3server start --port 9100 --load-archive`` starts it detached, writes a
pidfile and uploads ``data/archive`` to bucket ``lssr-archive``; ``stop --port 9100`` stops it by
PID. The in-process ``ThreadedMotoServer`` is not used: it deadlocks on GDAL writes
(see STACK.md). State is in memory: a restart starts with no buckets (moto 5.2 has no option to
keep objects on disk; its request recorder can replay a session, which tests use), so advice about
resuming a run stored here must say so (:func:`in_memory_server`, :data:`IN_MEMORY_NOTE`).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from lssr_ray.errors import ConfigError, StorageUnreachableError
from lssr_ray.fileio import endpoint_gdal_options

DEFAULT_BUCKET = "lssr-archive"
"""Bucket that ``--load-archive`` fills with ``data/archive``."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Hosts this server may listen on."""
IN_MEMORY_NOTE = ("the loopback S3 server keeps objects in memory only: after it restarts, its buckets and "
                  "the committed chips are gone; recreate the bucket (`make s3-up` reloads the archive) and "
                  "rerun, which recomputes every chip")
"""Resume advice for a store on this server (its objects do not survive a restart)."""


@dataclass(frozen=True)
class S3Server:
    """A running loopback S3 server."""

    host: str
    """Loopback address it listens on."""
    port: int
    """TCP port."""
    pid: int
    """Process id of the ``moto_server`` subprocess."""

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` (boto3/s3fs ``endpoint_url``)."""
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for boto3/s3fs and GDAL to use this server (see :func:`s3_env`)."""
        return s3_env(self.endpoint_url)


def s3_env(endpoint_url: str) -> dict[str, str]:
    """AWS_* variables for boto3/s3fs (``AWS_ENDPOINT_URL``) and GDAL (``AWS_S3_ENDPOINT``...)."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint_url,
        # GDAL's own names too, for GDAL tools run outside lssr_ray.fileio.gdal_env
        **endpoint_gdal_options(endpoint_url),
        "CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE": "YES",
    }


def pidfile_for(port: int) -> Path:
    """Pidfile of the server on ``port`` (in the system temp dir)."""
    return Path(tempfile.gettempdir()) / f"lssr-s3server-{port}.pid"


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(host: str, port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/moto-api/", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def start(port: int | None = None, *, host: str = "127.0.0.1", timeout: float = 20.0, log: str | Path | None = None) -> S3Server:
    """Start ``moto_server`` on ``host:port`` (a free port if None), wait until it answers.

    The process runs in its own session so it outlives a CLI parent; its PID goes to
    :func:`pidfile_for`. Raises :class:`StorageUnreachableError` if it does not come up.
    """
    if host not in LOOPBACK_HOSTS:
        raise ConfigError(f"the test S3 server only listens on loopback; got host {host!r}, use 127.0.0.1")
    port = port or free_port()
    if _ready(host, port):
        raise StorageUnreachableError(f"port {port} on {host} already serves S3; stop it first (stop --port {port})")
    with open(log or os.devnull, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StorageUnreachableError(f"moto_server exited with code {proc.returncode} on {host}:{port}")
        if _ready(host, port):
            pidfile_for(port).write_text(str(proc.pid))
            return S3Server(host, port, proc.pid)
        time.sleep(0.1)
    proc.terminate()
    raise StorageUnreachableError(f"moto_server did not answer on http://{host}:{port} within {timeout:.0f} s")


def in_memory_server(endpoint_url: str | None) -> bool:
    """True if ``endpoint_url`` is a loopback ``moto_server`` (answers ``/moto-api/``): a store
    there is lost when the server restarts. Only loopback hosts are asked (one local request)."""
    from urllib.parse import urlparse

    if not endpoint_url:
        return False
    u = urlparse(str(endpoint_url))
    if u.hostname not in LOOPBACK_HOSTS:
        return False
    return _ready(u.hostname, u.port or (443 if u.scheme == "https" else 80))


def _is_moto(pid: int) -> bool:
    try:
        return b"moto" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop(server: S3Server | int, *, timeout: float = 10.0) -> bool:
    """Stop a server (an :class:`S3Server`, or a port whose pidfile names it). True if one was stopped."""
    if isinstance(server, S3Server):
        pid, port = server.pid, server.port
    else:
        port = int(server)
        pf = pidfile_for(port)
        if not pf.exists():
            return False
        pid = int(pf.read_text().strip())
    pidfile_for(port).unlink(missing_ok=True)
    if not _is_moto(pid):  # stale pidfile: never signal an unrelated process
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        except ChildProcessError:
            done = 0 if _is_moto(pid) else pid
        if done:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def upload_folder(folder: str | Path, bucket: str, *, endpoint_url: str, prefix: str = "") -> int:
    """Upload every file under ``folder`` to ``s3://bucket/prefix/<relative path>``; returns the count.

    Creates the bucket when needed.
    """
    import boto3

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"folder to upload not found: {folder}")
    env = s3_env(endpoint_url)
    s3 = boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
    from concurrent.futures import ThreadPoolExecutor

    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    keys = ["/".join(x for x in (prefix.strip("/"), p.relative_to(folder).as_posix()) if x) for p in files]
    with ThreadPoolExecutor(max_workers=8) as pool:  # boto3 clients are thread-safe; many small files
        list(pool.map(lambda fk: s3.upload_file(str(fk[0]), bucket, fk[1]), zip(files, keys)))
    return len(files)


class CountingProxy:
    """A loopback HTTP proxy in front of an S3 endpoint that counts what crosses it.

    Point clients at :attr:`endpoint_url` (e.g. ``s3_env(proxy.endpoint_url)``): every request is
    forwarded unchanged (same method, path, headers, body) to ``upstream`` and the answer sent back
    unchanged. :attr:`requests` counts requests per method, :attr:`body_bytes` the response body
    bytes (what a client fetched). Used to measure reads honestly (bench/hls_reads.py, tests).
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        from urllib.parse import urlparse

        if host not in LOOPBACK_HOSTS:
            raise ConfigError(f"the counting proxy only listens on loopback; got host {host!r}")
        u = urlparse(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.host = host
        self.requests: dict[str, int] = {}
        self.body_bytes = 0
        self._lock = threading.Lock()
        self._server = None

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the proxy."""
        return f"http://{self.host}:{self._server.server_address[1]}"

    def reset(self) -> None:
        """Zero the counters."""
        with self._lock:
            self.requests, self.body_bytes = {}, 0

    def _record(self, method: str, nbytes: int) -> None:
        with self._lock:
            self.requests[method] = self.requests.get(method, 0) + 1
            self.body_bytes += nbytes

    def start(self) -> Self:
        """Listen on a free loopback port (a daemon thread serves)."""
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as clients use S3

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                proxy._record(self.command, len(data))
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # a HEAD answer announces the object's length but has no body
                self.send_header("Content-Length", resp.getheader("Content-Length", "0")
                                 if self.command == "HEAD" else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, *args) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """CLI: ``start --port N [--load-archive]`` / ``stop --port N``."""
    from lssr_ray.config import REPO_ROOT

    ap = argparse.ArgumentParser(prog="python -m lssr_ray.data.s3server", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--load-archive", action="store_true", help=f"upload data/archive to s3://{DEFAULT_BUCKET}")
    ap.add_argument("--archive", default=str(REPO_ROOT / "data" / "archive"))
    a = ap.parse_args(argv)
    if a.action == "stop":
        print(f"stopped S3 server on port {a.port}" if stop(a.port) else f"no S3 server recorded on port {a.port}")
        return 0
    srv = start(a.port, log=Path(tempfile.gettempdir()) / f"lssr-s3server-{a.port}.log")
    print(f"S3 server {srv.endpoint_url} (pid {srv.pid}); stop with: python -m lssr_ray.data.s3server stop --port {a.port}")
    if a.load_archive:
        n = upload_folder(a.archive, DEFAULT_BUCKET, endpoint_url=srv.endpoint_url)
        print(f"uploaded {n} files from {a.archive} to s3://{DEFAULT_BUCKET}/")
    print(f"note: {IN_MEMORY_NOTE}")
    print("environment for clients:")
    for k, v in srv.env().items():
        print(f"  export {k}={v}")
    return 0


__all__ = ["DEFAULT_BUCKET", "IN_MEMORY_NOTE", "LOOPBACK_HOSTS", "CountingProxy", "S3Server", "free_port", "in_memory_server",
           "pidfile_for", "s3_env", "start", "stop", "upload_folder"]

if __name__ == "__main__":
    raise SystemExit(main())
