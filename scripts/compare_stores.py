"""Compare two mapping stores array by array, raw bytes as stored (no decoding).

A refactor that claims "no change in behaviour" is checked with this: map the demo before and
after, then

    python scripts/compare_stores.py BEFORE.zarr AFTER.zarr

Every array of either store is compared on its raw stored values (int16 reflectance, fill values
and all), plus its dtype, shape, chunks, fill value and the CF attributes that decide how the
values decode. Run-specific attributes (times, paths, run wall clock) are not compared. Exit
status 0 when every array is equal, 1 otherwise; one line per array either way.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import zarr

# Attributes that say how stored values decode: a change there changes the data an analyst gets.
DECODING_ATTRS = ("scale_factor", "add_offset", "_FillValue", "units", "valid_range", "grid_mapping",
                  "flag_values", "flag_meanings", "_ARRAY_DIMENSIONS")


def compare(before: str, after: str) -> list[str]:
    """One line per array; lines of differing arrays start with "DIFF"."""
    a, b = zarr.open_group(before, mode="r"), zarr.open_group(after, mode="r")
    names_a = {k for k, _ in a.arrays()}
    names_b = {k for k, _ in b.arrays()}
    lines = [f"DIFF {n}: only in {'before' if n in names_a else 'after'}" for n in sorted(names_a ^ names_b)]
    for name in sorted(names_a & names_b):
        x, y = a[name], b[name]
        meta = [f"{key}" for key, u, v in (("dtype", x.dtype, y.dtype), ("shape", x.shape, y.shape),
                                          ("chunks", x.chunks, y.chunks), ("fill_value", x.fill_value, y.fill_value))
                if str(u) != str(v)]
        meta += [f"attr {k}" for k in DECODING_ATTRS if x.attrs.get(k) != y.attrs.get(k)]
        vx, vy = x[...], y[...]
        equal = vx.shape == vy.shape and vx.dtype == vy.dtype and np.array_equal(vx, vy, equal_nan=vx.dtype.kind == "f")
        if equal and not meta:
            lines.append(f"same {name}: {vx.dtype} {vx.shape}, {vx.size} values bitwise equal")
        else:
            what = meta + ([] if equal else ["values"])
            lines.append(f"DIFF {name}: {', '.join(what)} differ")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    args = ap.parse_args(argv)
    lines = compare(args.before, args.after)
    print("\n".join(lines))
    return 1 if any(line.startswith("DIFF") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
