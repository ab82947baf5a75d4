"""A mapping run's books: what it will cost before it starts, and that every planned chip-date
ends committed, with nothing lost and no endless wait.

Why this exists (issue 10): a Belgium-sized AOI over a one-chip catalog was planned as 22,086
chips x 17 dates. Ray Data counts *work items* (one read block x one date, up to block² chips:
94,809 of them there), the driver's loop counted *chip rows* against chips x dates, and nothing
reconciled the two: the loop's only way out was the end of Ray Data's iterator, so when the
executor stopped delivering (it logged completion after 414 items) the driver waited forever.
Now completion is counted from the committed partials against the plan
(:func:`check_accounted`, date by date), and the driver's loop gives up after ``stall_timeout_s`` without a
commit (:func:`stream_with_watchdog`).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from lssr_ray.errors import ConfigError, IncompleteRunError


def estimate_run_s(n_chip_dates: int, *, chip_s: float, actors: int) -> float:
    """Seconds of stage 1 for ``n_chip_dates`` at ``chip_s`` per chip-date per actor."""
    return n_chip_dates * chip_s / max(1, actors)


def _hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"


def confirm_run(n_chip_dates: int, n_chips: int, n_dates: int, cfg: Any,
                confirm: Callable[[str], bool] | None) -> float:
    """Refuse (``ConfigError``) a run estimated longer than ``cfg.confirm_over_s`` unless
    ``cfg.yes`` or ``confirm(question)`` (a terminal prompt) says yes; returns the estimate (s)."""
    est = estimate_run_s(n_chip_dates, chip_s=cfg.chip_s_estimate, actors=cfg.num_actors or 1)
    if est <= cfg.confirm_over_s or cfg.yes:
        return est
    what = (f"{n_chip_dates} chip-date(s) to compute ({n_chips} chips x {n_dates} date(s)), estimated "
            f"{_hours(est)} at {cfg.chip_s_estimate:g} s per chip-date, over the {_hours(cfg.confirm_over_s)} limit")
    if confirm is None:
        raise ConfigError(f"{what}; pass --yes to start it (or narrow the AOI / dates); nothing was written")
    if not confirm(f"{what}. Start it? [y/N] "):
        raise ConfigError(f"run not started ({what}); nothing was written")
    return est


def stream_with_watchdog(batches: Callable[[], Iterable[Any]], *, stall_s: float,
                         idle: Callable[[], None] = lambda: None,
                         describe: Callable[[], str] = lambda: "") -> Iterator[Any]:
    """Yield from ``batches()`` (consumed in a daemon thread) and raise :class:`IncompleteRunError`
    when nothing arrives for ``stall_s`` seconds; ``idle`` is called about every second while
    waiting (store-lock heartbeats) and ``describe()`` adds progress to the error."""
    q: queue.Queue = queue.Queue(maxsize=4)
    end = object()

    def pump() -> None:
        try:
            for b in batches():
                q.put(b)
            q.put(end)
        except BaseException as exc:  # noqa: BLE001  (any failure is handed to the driver thread, raised there)
            q.put(exc)

    threading.Thread(target=pump, name="lssr-stage1-stream", daemon=True).start()
    last = time.monotonic()
    while True:
        try:
            item = q.get(timeout=min(1.0, stall_s))
        except queue.Empty:
            idle()
            if time.monotonic() - last > stall_s:
                raise IncompleteRunError(
                    f"stage 1 stalled: no chip committed for {stall_s:.0f} s{describe()}; committed chips "
                    "are kept: rerun with the same settings to resume (stall_timeout_s sets the limit)") from None
            continue
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        last = time.monotonic()
        yield item


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr counting chips (``enabled=False``: a silent one)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="chip", disable=not enabled, file=sys.stderr, mininterval=1.0)


def check_accounted(chip_ids: Sequence[str], done: Mapping[int, set[str]] | Callable[[int], set[str]],
                    n_times: int, labels: Mapping[int, str], *, examples: int = 5) -> None:
    """:class:`IncompleteRunError` unless every time step holds a committed partial for each
    planned chip. ``done`` gives a date's committed ids (``{ti: ids}`` or a function of ``ti``,
    asked one date at a time); a date is checked by its count, and its missing chip-dates are
    listed (at most ``examples`` named) only when the count falls short."""
    at = done if callable(done) else (lambda ti: done.get(ti, set()))
    missing, named = 0, []
    for ti in range(n_times):
        ids = at(ti)
        if len(ids) == len(chip_ids):  # the run identity fixes the plan: no foreign ids, so the count decides
            continue
        gone = [c for c in chip_ids if c not in ids]
        missing += len(gone)
        named += [f"{c} {labels.get(ti, ti)}" for c in gone[: max(0, examples - len(named))]]
    if missing:
        raise IncompleteRunError(
            f"stage 1 ended with {missing} of {len(chip_ids) * n_times} planned chip-dates not committed "
            f"(e.g. {', '.join(named)}); the store is not marked completed; committed chips are kept: rerun with the "
            "same settings to resume")


__all__ = ["check_accounted", "confirm_run", "estimate_run_s", "progress_bar", "stream_with_watchdog"]
