"""A loopback stand-in for an Earthdata https archive, run as a subprocess by the tests.

``python tests/http_archive.py PORT ROOT LOG TOKEN`` serves files of ROOT with range requests
(as GDAL's /vsicurl/ reads COGs) at ``/<mode>/<file>``:

* ``auth``: needs ``Authorization: Bearer TOKEN`` (else 401); ``public``: no check;
* ``edl``: the file for a session cookie, else Earthdata Login's redirect flow (below);
* ``403`` / ``404``: that status; ``flaky``: 503 for the first two requests of a path, then the
  file; ``down``: always 503; ``redirect``: 302 to ``http://localhost:PORT/public/<file>``
  (another host name, as the archive redirects to signed S3 URLs);
* ``/s3credentials``: with the bearer token, the next entry of ROOT/keys.json as
  ``{"accessKeyId", "secretAccessKey", "sessionToken", "expiration"}`` (one hour from now);
* ``/s3credentials-login``: the same keys for a session cookie, else Earthdata Login's redirect
  flow: 302 to ``http://localhost:PORT/oauth/authorize`` (needs basic auth ``me:pw``), which
  302s back to ``/login-callback?code=ok`` (sets the cookie), which 302s to ``/s3credentials-login``.

Every request is appended to LOG as a JSON line ``{"path", "host", "auth"}``. A subprocess, not
a thread: GDAL may hold the GIL while it waits for the server.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import sys
import threading
from pathlib import Path

PORT, ROOT, LOG, TOKEN = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
_lock = threading.Lock()
_seen: dict[str, int] = {}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the LOG file is the record
        pass

    def _status(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        auth = self.headers.get("Authorization")
        with _lock:
            with LOG.open("a") as fh:
                fh.write(json.dumps({"path": self.path, "host": self.headers.get("Host"), "auth": auth}) + "\n")
            _seen[self.path] = _seen.get(self.path, 0) + 1
            count = _seen[self.path]
        authorized = auth == f"Bearer {TOKEN}"
        if self.path == "/s3credentials":
            return self._credentials(authorized, count)
        if self.path == "/s3credentials-login":
            if "edl=ok" in (self.headers.get("Cookie") or ""):
                return self._credentials(True, count)
            return self._status(302, {"Location": f"http://localhost:{PORT}/oauth/authorize"})
        if self.path.startswith("/oauth/authorize"):
            if auth != "Basic " + base64.b64encode(b"me:pw").decode():
                return self._status(401, {"WWW-Authenticate": 'Basic realm="edl"'})
            back = self.path.partition("?next=")[2] or "/s3credentials-login"
            return self._status(302, {"Location": f"http://127.0.0.1:{PORT}/login-callback?code=ok&next={back}"})
        if self.path.startswith("/login-callback?code=ok"):
            back = self.path.partition("&next=")[2] or "/s3credentials-login"
            return self._status(302, {"Set-Cookie": "edl=ok; Path=/", "Location": back})
        mode, _, name = self.path.lstrip("/").partition("/")
        name, _, query = name.partition("?")  # a query only makes a URL distinct (GDAL caches per URL)
        if mode in ("403", "404"):
            return self._status(int(mode))
        if mode == "auth" and not authorized:
            return self._status(401, {"WWW-Authenticate": "Bearer"})
        if mode == "edl" and "edl=ok" not in (self.headers.get("Cookie") or ""):
            return self._status(302, {"Location": f"http://localhost:{PORT}/oauth/authorize?next={self.path}"})
        if mode == "down" or (mode == "flaky" and count <= 2):
            return self._status(503)
        if mode == "redirect":
            return self._status(302, {"Location": f"http://localhost:{PORT}/public/{name}?{query}"})
        path = ROOT / name
        if mode not in ("auth", "public", "flaky", "edl") or not path.is_file():
            return self._status(404)
        self._file(path.read_bytes(), head)

    def _file(self, data: bytes, head: bool) -> None:
        rng = self.headers.get("Range")
        body = data
        if rng:
            first, last = rng.split("=", 1)[1].split("-")
            a, b = int(first), min(int(last or len(data) - 1), len(data) - 1)
            body = data[a : b + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _credentials(self, authorized: bool, count: int) -> None:
        if not authorized:
            return self._status(401)
        keys = json.loads((ROOT / "keys.json").read_text())
        key, secret, token = keys[min(count, len(keys)) - 1]
        until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        body = json.dumps({"accessKeyId": key, "secretAccessKey": secret, "sessionToken": token,
                           "expiration": until.strftime("%Y-%m-%d %H:%M:%S+00:00")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
