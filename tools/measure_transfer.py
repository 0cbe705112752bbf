"""Borrowed records on shapes no log holds: the ``transfer`` suite, default build against torch.

Run on a quiet machine (nothing else running): ``python tools/measure_transfer.py [OUT.json]``.
Uses a fresh user cache (``$CONVTVM_CACHE`` set to a temporary folder) so that every op borrows on its
first build; prints each first build's time, then ``bench_ops``'s table, the geomean and minimum of
torch / convtvm for the fallback ("before") and the default build ("after"), and writes the result
file (``bench.results`` schema, with ``first_build_s`` per row).
"""

import math
import os
import sys
import tempfile
import time

os.environ["CONVTVM_CACHE"] = tempfile.mkdtemp(prefix="convtvm-transfer-")

import convtvm  # noqa: E402
from convtvm import suites  # noqa: E402
from convtvm.bench import results  # noqa: E402
from convtvm.bench.ops import bench_ops  # noqa: E402


def _stats(ratios):
    return math.exp(sum(map(math.log, ratios)) / len(ratios)), min(ratios)


def main(out=None):
    ws = suites.suite("transfer")
    first = {}
    for name, w in ws.items():
        t0 = time.perf_counter()
        m = convtvm.build(w, "x86")
        first[name] = (time.perf_counter() - t0, m.schedule, m.schedule_source)
        print(f"{name:28s} first build {first[name][0]:6.1f} s  {m.schedule:9s} {m.schedule_source}", flush=True)
    result = bench_ops(ws, "x86")
    print(f"{'op':28s} {'torch ms':>9s} {'fallback':>9s} {'default':>9s} {'before':>7s} {'after':>7s}  schedule")
    before, after = {}, {}
    for row in result["results"]:
        t = row["timings_ms"]
        row["first_build_s"] = round(first[row["name"]][0], 2)
        before[row["name"]] = t["torch"] / t["convtvm_untuned"]
        after[row["name"]] = t["torch"] / t.get("convtvm_tuned", t["convtvm_untuned"])
        print(f"{row['name']:28s} {t['torch']:9.4f} {t['convtvm_untuned']:9.4f} "
              f"{t.get('convtvm_tuned', float('nan')):9.4f} {before[row['name']]:6.2f}x {after[row['name']]:6.2f}x  "
              f"{row['schedule']}")
    for label, sel in (("all", lambda n: True), ("NCHW", lambda n: n.endswith("NCHW")),
                       ("NHWC", lambda n: n.endswith("NHWC"))):
        b = _stats([v for k, v in before.items() if sel(k)])
        a = _stats([v for k, v in after.items() if sel(k)])
        print(f"{label:5s} before (fallback): geomean {b[0]:.2f}x min {b[1]:.2f}x | "
              f"after (default, borrowed): geomean {a[0]:.2f}x min {a[1]:.2f}x")
    print(f"first build: median {sorted(v[0] for v in first.values())[len(first) // 2]:.1f} s, "
          f"max {max(v[0] for v in first.values()):.1f} s")
    if out:
        results.write(out, result)


if __name__ == "__main__":
    main(*sys.argv[1:])
