"""Auto-scheduling with MetaSchedule: measurement (``measure``), the tuning engine (``engine``), log
maintenance (``maintain``: prune, merge, retarget, summarize), the register-tile sweep (``retile``)
and a network's tuning (``network``). Import the submodule you need."""
