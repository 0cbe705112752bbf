"""Channels-first against channels-last: each suite workload's channels-first twin against itself in
channels-last, both built with the default records and called as users call them (a bound module on a
torch tensor: contiguous NC*S as torch's default, and in torch's channels_last memory format),
interleaved, medians. Run alone on the machine:

    python tools/measure_channels_first.py OUT.json [ROUNDS]
"""
import json, sys, math
import numpy as np, torch
import convtvm
from convtvm import suites
from convtvm.params import LAYOUTS
from convtvm.variants import replace_params
from convtvm.timing import call_contender, time_interleaved, same_threads
from convtvm.metrics import rel_err

same_threads()
rows = []
for name, w in suites.suite("all").items():
    if "layout" not in w.params or not w.channels_last:
        continue
    cf = replace_params(w, layout=LAYOUTS[w.ndim][0])
    xs_cl = w.random_inputs(seed=1)
    xs_cf = cf.random_inputs(seed=1)
    m_cl, m_cf = convtvm.build(w, "x86"), convtvm.build(cf, "x86")
    f_cl, f_cf = m_cl.bind(*xs_cl[1:]), m_cf.bind(*xs_cf[1:])
    x_cl, x_cf = torch.from_numpy(xs_cl[0]).clone(), torch.from_numpy(xs_cf[0]).clone()
    x_cf_cl = x_cf.contiguous(memory_format=torch.channels_last) if x_cf.dim() == 4 else (
        x_cf.contiguous(memory_format=torch.channels_last_3d) if x_cf.dim() == 5 else None)
    err = rel_err(f_cf(x_cf), cf.reference(*xs_cf))
    cont = {"cl": call_contender(f_cl, x_cl), "cf": call_contender(f_cf, x_cf)}
    if x_cf_cl is not None:
        cont["cf_clmem"] = call_contender(f_cf, x_cf_cl)
    ms = time_interleaved(cont, int(sys.argv[2]) if len(sys.argv) > 2 else 9)
    row = {"name": name, "cl_ms": ms["cl"], "cf_ms": ms["cf"], "cf_clmem_ms": ms.get("cf_clmem"),
           "ratio": ms["cf"] / ms["cl"], "schedule_cf": m_cf.schedule, "schedule_cl": m_cl.schedule, "err": err}
    rows.append(row)
    print(f"{name:8s} cl {ms['cl']:9.4f}  cf {ms['cf']:9.4f}  cf(channels_last mem) {ms.get('cf_clmem') or float('nan'):9.4f}"
          f"  cf/cl {row['ratio']:.2f}  {m_cf.schedule}/{m_cl.schedule}  err {err:.1e}", flush=True)
r = [x["ratio"] for x in rows]
print(f"geomean cf/cl {math.exp(sum(map(math.log, r)) / len(r)):.2f} over {len(r)}; max {max(r):.2f}; above 1.25: "
      f"{[x['name'] for x in rows if x['ratio'] > 1.25]}")
json.dump(rows, open(sys.argv[1], "w"), indent=1)
