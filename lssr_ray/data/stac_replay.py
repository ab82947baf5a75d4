"""A loopback STAC API that replays recorded CMR-STAC documents, so ``pystac-client`` runs its
real code path (landing page, conformance, collections, GET and POST ``/search`` with paging)
without the network. Used by the tests and for trying ``lssr-search-hls`` offline::

    python -m lssr_ray.data.stac_replay --port 9200      # then --stac-url http://127.0.0.1:9200/stac/LPCLOUD

What it serves (``data/samples/cmr_stac``, see its PROVENANCE.md) under ``/stac/LPCLOUD``: the
recorded landing page, conformance and collection documents, and ``/search`` pages built from
the recorded items. Every ``https://cmr.earthdata.nasa.gov/stac`` link in them is rewritten to
this server, so following links never leaves loopback; asset hrefs are left as recorded.

**Matching rule** (how a search request selects recorded items; the same request always gives
the same pages):

- ``collections``: item ``collection`` in the list (a legacy ``HLSL30.v2.0`` id counts as
  ``HLSL30_2.0``, as CMR-STAC accepts both); absent = every collection. ``ids`` likewise.
- ``bbox`` / ``intersects``: the item geometry intersects it (shapely, lon/lat).
- ``datetime`` (``a/b``, ``a/..``, ``../b`` or one instant): the item's
  ``[start_datetime, end_datetime]`` (or ``datetime``) overlaps it; a bare date covers its day.
- ``query`` ``{"eo:cloud_cover": {"lt"|"lte"|"gt"|"gte": v}}``: CMR-STAC's server-side cloud
  filter (items without ``eo:cloud_cover`` do not match).
- order: ``datetime`` then id; ``limit`` items per page (default 10, at most 2000, as CMR-STAC);
  ``cursor`` = offset of the next page. A GET page's ``next`` link is the search URL with the
  query and the new cursor (as CMR-STAC writes it); a POST page's is a POST with the body plus
  the cursor. Pages carry ``numberMatched``, ``numberReturned`` and ``context``.

Injected failures (:meth:`StacReplayServer.fail`) answer the next matching requests with a
status (e.g. 429 with ``Retry-After`` or 503) before any replay, for retry tests. A folder given
as ``static_dir`` is served as plain files under ``/static/`` (a static STAC catalog).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from lssr_ray.errors import ConfigError

RECORDINGS = Path(__file__).resolve().parents[2] / "data" / "samples" / "cmr_stac"
"""The recorded CMR-STAC documents (PROVENANCE.md there)."""
API_PATH = "/stac/LPCLOUD"
"""Path of the replayed API root on this server (as on the real host)."""
RECORDED_ROOT = "https://cmr.earthdata.nasa.gov/stac"
DEFAULT_LIMIT, MAX_LIMIT = 10, 2000
_CLOUD_OPS = {"lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
              "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b}


@dataclass
class _Fault:
    status: int
    remaining: int | None  # None: every request from now on
    retry_after: float | None
    path: str


def _utc(text: str, *, end: bool) -> _dt.datetime | None:
    text = text.strip()
    if text in ("", ".."):
        return None
    if len(text) == 10:  # a bare date covers its whole day
        day = _dt.datetime.fromisoformat(text).replace(tzinfo=_dt.UTC)
        return day + _dt.timedelta(days=1) - _dt.timedelta(microseconds=1) if end else day
    when = _dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=_dt.UTC)


def _interval(value: str) -> tuple[_dt.datetime | None, _dt.datetime | None]:
    a, sep, b = value.partition("/")
    try:
        return (_utc(a, end=False), _utc(b, end=True)) if sep else (_utc(a, end=False), _utc(a, end=True))
    except ValueError:
        raise ConfigError(f"datetime {value!r} is not an RFC 3339 instant or interval") from None


def _canonical_collection(cid: str) -> str:
    return cid.replace(".v", "_") if ".v" in cid else cid


class Recordings:
    """The recorded documents of one STAC API (landing, conformance, collections, items)."""

    def __init__(self, folder: str | Path = RECORDINGS) -> None:
        root = Path(folder)
        if not (root / "landing.json").is_file():
            raise ConfigError(f"no recorded STAC API in {root} (landing.json missing)")
        self.landing = json.loads((root / "landing.json").read_text())
        self.conformance = json.loads((root / "conformance.json").read_text())
        self.collections = {c["id"]: c for c in (json.loads(p.read_text())
                                                 for p in sorted((root / "collections").glob("*.json")))}
        items = [json.loads(p.read_text()) for p in sorted((root / "items").glob("*.json"))]
        self.items = sorted(items, key=lambda it: (it["properties"]["datetime"], it["id"]))

    def select(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The recorded items a search with ``params`` matches (module docstring: matching rule)."""
        from shapely.geometry import box, shape

        wanted = {_canonical_collection(c) for c in params.get("collections") or []}
        ids = set(params.get("ids") or [])
        area = None
        if params.get("bbox"):
            b = [float(v) for v in params["bbox"]]
            area = box(b[0], b[1], b[-3 if len(b) == 6 else 2], b[-2 if len(b) == 6 else 3])
        if params.get("intersects"):
            geom = shape(params["intersects"])
            area = geom if area is None else area.intersection(geom)
        t0, t1 = _interval(params["datetime"]) if params.get("datetime") else (None, None)
        cloud = (params.get("query") or {}).get("eo:cloud_cover") or {}
        unknown = set(cloud) - set(_CLOUD_OPS)
        if unknown:
            raise ConfigError(f"query eo:cloud_cover supports {sorted(_CLOUD_OPS)}, got {sorted(unknown)}")
        out = []
        for it in self.items:
            props = it["properties"]
            if wanted and it["collection"] not in wanted or ids and it["id"] not in ids:
                continue
            if area is not None and not shape(it["geometry"]).intersects(area):
                continue
            start = _utc(props.get("start_datetime") or props["datetime"], end=False)
            stop = _utc(props.get("end_datetime") or props["datetime"], end=False)
            if (t0 and stop < t0) or (t1 and start > t1):
                continue
            cc = props.get("eo:cloud_cover")
            if cloud and (cc is None or not all(_CLOUD_OPS[op](cc, float(v)) for op, v in cloud.items())):
                continue
            out.append(it)
        return out


def _cmr_stac_root() -> dict[str, Any]:
    """CMR-STAC's root catalog, cut to the one provider replayed (the item and landing ``root``
    links point here; its description is CMR-STAC's own)."""
    return {"type": "Catalog", "id": "stac", "title": "NASA CMR STAC Proxy", "stac_version": "1.1.0",
            "description": "This is the landing page for CMR-STAC. Each provider link contains a STAC endpoint.",
            "links": [{"rel": "self", "href": RECORDED_ROOT, "type": "application/json"},
                      {"rel": "root", "href": RECORDED_ROOT, "type": "application/json"},
                      {"rel": "child", "href": RECORDED_ROOT + "/LPCLOUD", "title": "LPCLOUD",
                       "type": "application/json"}]}


def _get_params(query: dict[str, list[str]]) -> dict[str, Any]:
    """A GET search's query string in the shape of a POST body (pystac-client's GET encoding)."""
    one = {k: v[-1] for k, v in query.items()}
    out: dict[str, Any] = dict(one)
    for key in ("collections", "ids", "bbox"):
        if key in one:
            out[key] = [v for v in one[key].split(",") if v]
    for key in ("intersects", "query"):
        if key in one:
            try:
                out[key] = json.loads(one[key])
            except json.JSONDecodeError:
                raise ConfigError(f"{key} is not JSON: {one[key]!r}") from None
    return out


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # tests read .requests; no stderr noise
        pass

    def _send(self, status: int, body: Any, *, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        body: dict[str, Any] = {}
        if method == "POST":
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                return self._send(400, {"errors": ["request body is not JSON"]})
        srv = self.server.replay
        srv.log(method, url.path, url.query, body)
        fault = srv.take_fault(url.path)
        if fault is not None:
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            return self._send(fault.status, {"errors": [f"injected HTTP {fault.status}"]}, headers=headers)
        try:
            status, doc, ctype = srv.route(method, url.path, parse_qs(url.query), body)
        except ConfigError as exc:
            status, doc, ctype = 400, {"errors": [str(exc)]}, "application/json"
        self._send(status, doc, content_type=ctype)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    replay: StacReplayServer


class StacReplayServer:
    """The loopback API (start with :meth:`start` or ``with``); :attr:`url` is the API root."""

    def __init__(self, recordings: str | Path | Recordings = RECORDINGS, *, host: str = "127.0.0.1",
                 port: int = 0, static_dir: str | Path | None = None) -> None:
        self.recordings = recordings if isinstance(recordings, Recordings) else Recordings(recordings)
        self.static_dir = Path(static_dir).resolve() if static_dir else None
        self.requests: list[dict[str, Any]] = []
        """Every request received: ``{"method", "path", "query", "body"}``, in order."""
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.replay = self
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """The replayed STAC API root (what ``Client.open`` / ``--stac-url`` takes)."""
        return self.origin + API_PATH

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="stac-replay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail(self, status: int, *, times: int | None = 1, retry_after: float | None = None,
             path: str = API_PATH + "/search") -> None:
        """Answer the next ``times`` requests under ``path`` (None: all of them) with ``status``."""
        with self._lock:
            self._faults.append(_Fault(status, times, retry_after, path))

    def take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if path.startswith(f.path):
                    if f.remaining is not None:
                        f.remaining -= 1
                        if f.remaining <= 0:
                            self._faults.remove(f)
                    return f
        return None

    def log(self, method: str, path: str, query: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "query": query, "body": body})

    def searches(self) -> list[dict[str, Any]]:
        """The ``/search`` requests received (GET and POST)."""
        return [r for r in self.requests if r["path"] == API_PATH + "/search"]

    def _rewrite(self, doc: Any) -> Any:
        return json.loads(json.dumps(doc).replace(RECORDED_ROOT, self.origin + "/stac"))

    def route(self, method: str, path: str, query: dict[str, list[str]],
              body: dict[str, Any]) -> tuple[int, Any, str]:
        rec = self.recordings
        if path.startswith("/static/") and self.static_dir is not None and method == "GET":
            target = (self.static_dir / path[len("/static/"):]).resolve()
            if self.static_dir in target.parents and target.is_file():
                return 200, target.read_bytes(), "application/json"
            return 404, {"errors": [f"no file {path}"]}, "application/json"
        if path.rstrip("/") == "/stac" and method == "GET":
            return 200, self._rewrite(_cmr_stac_root()), "application/json"
        rel = path[len(API_PATH):].rstrip("/") if path.startswith(API_PATH) else None
        geo = "application/geo+json"
        if rel == "" and method == "GET":
            return 200, self._rewrite(rec.landing), "application/json"
        if rel == "/conformance":
            return 200, rec.conformance, "application/json"
        if rel == "/collections":
            return 200, self._rewrite({"collections": list(rec.collections.values()), "links": []}), "application/json"
        if rel == "/search":
            params = _get_params(query) if method == "GET" else dict(body)
            return 200, self._page(method, params), geo
        if rel and rel.startswith("/collections/"):
            parts = rel.split("/")[2:]
            coll = rec.collections.get(parts[0])
            if coll is None:
                return 404, {"errors": [f"Collection [{parts[0]}] not found"]}, "application/json"
            if len(parts) == 1:
                return 200, self._rewrite(coll), "application/json"
            params = {**_get_params(query), "collections": [parts[0]]}
            if len(parts) == 3 and parts[1] == "items":
                found = rec.select({**params, "ids": [parts[2]]})
                if not found:
                    return 404, {"errors": [f"Item [{parts[2]}] not found"]}, "application/json"
                return 200, self._rewrite(found[0]), geo
            if len(parts) == 2 and parts[1] == "items":
                return 200, self._page("GET", params, path=path), geo
        return 404, {"errors": [f"no route {method} {path}"]}, "application/json"

    def _page(self, method: str, params: dict[str, Any], *, path: str = API_PATH + "/search") -> dict[str, Any]:
        try:
            limit = min(int(params.get("limit") or DEFAULT_LIMIT), MAX_LIMIT)
            offset = int(params.get("cursor") or 0)
        except ValueError:
            raise ConfigError(f"limit and cursor must be integers, got {params.get('limit')!r}, "
                              f"{params.get('cursor')!r}") from None
        matched = self.recordings.select(params)
        page = matched[offset:offset + limit]
        here = self.origin + path
        links = [{"rel": "self", "href": here, "type": "application/geo+json", "title": "This search"},
                 {"rel": "root", "href": self.origin + "/stac", "type": "application/json", "title": "Root Catalog"},
                 {"rel": "parent", "href": self.url, "type": "application/json", "title": "Provider Catalog"}]
        if offset + limit < len(matched):
            nxt = {**params, "cursor": str(offset + limit)}
            if method == "GET":
                query = {k: (",".join(map(str, v)) if k in ("collections", "ids", "bbox") else
                             json.dumps(v) if isinstance(v, dict) else v) for k, v in nxt.items()}
                links.append({"rel": "next", "href": f"{here}?{urlencode(query)}", "type": "application/geo+json",
                              "title": "Next page of results"})
            else:
                links.append({"rel": "next", "href": here, "type": "application/geo+json", "method": "POST",
                              "body": nxt, "merge": False, "title": "Next page of results"})
        return {"type": "FeatureCollection", "features": [self._rewrite(it) for it in page], "links": links,
                "numberMatched": len(matched), "numberReturned": len(page),
                "context": {"returned": len(page), "limit": limit, "matched": len(matched)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Serve the recorded CMR-STAC documents on loopback.")
    p.add_argument("--port", type=int, default=9200)
    p.add_argument("--recordings", default=str(RECORDINGS), help="folder of recorded documents")
    p.add_argument("--static-dir", default=None, help="also serve this folder under /static/")
    args = p.parse_args(argv)
    srv = StacReplayServer(args.recordings, port=args.port, static_dir=args.static_dir)
    print(f"STAC API replay at {srv.url} (Ctrl-C stops it)", flush=True)
    try:
        srv._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv._httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["API_PATH", "RECORDINGS", "Recordings", "StacReplayServer"]
