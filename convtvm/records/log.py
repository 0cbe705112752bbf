"""A tuning log: a MetaSchedule JSON database folder and the files convtvm keeps beside it.

::

    tuning_logs/x86-znver3/
        target.json                   which target the records were measured on
        database_workload.json        one line per workload (the IRModule, identified structurally)
        database_tuning_record.json   one line per measured candidate: [workload line, record]
        trials.json                   name -> trials measured (optional)
        curves.json                   name -> tuning curve: [trial, best ms, seconds of tuning] at each new best
        carried.json                  workload key -> the shipped log its record was carried from
        borrowed.json                 workload key -> the tuned workload its record was borrowed from

``TuningLog`` is the only code that reads or writes these files. Every write is atomic (a temp file
renamed over the old one, ``artifact``), so an interrupted write leaves the previous file whole.
A line that cannot be read is skipped with a ``LogWarning`` naming its file and line; the log's
other records still apply.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from .. import artifact
from ..targets import SHIPPED_LOGS, TargetInfo, cache_dir, resolve

DB_FILES = ("database_workload.json", "database_tuning_record.json")
TARGET, TRIALS, CURVES, CARRIED, BORROWED = "target.json", "trials.json", "curves.json", "carried.json", "borrowed.json"


def log_argument(value, where: str):
    """A ``tuning_log=`` argument, checked: None (the default records), False (none) or a log folder's
    path (returned as given). Raises ValueError naming ``where`` for anything else (True, 0, "", a
    number): no value is taken by truthiness."""
    import os
    if value is None or value is False or isinstance(value, TuningLog):
        return value
    if isinstance(value, (str, os.PathLike)) and str(os.fspath(value)).strip():
        return value
    raise ValueError(f"{where}: tuning_log={value!r} must be None (the default records), False (no records) "
                     "or a tuning log folder's path")


class LogWarning(UserWarning):
    """A line of a tuning log that cannot be read (skipped; the log's other records still apply)."""


def target_key(t: dict) -> tuple:
    """The fields of an exported TVM target that decide whether a record applies to it."""
    return tuple(str(t.get(k, "")) for k in ("kind", "mcpu", "mtriple", "arch"))


def first_line(e: Exception) -> str:
    """``e`` in one line for a message: its type and the first line of its text (TVM's errors run to
    many lines; a ScheduleError's text is often not rendered at all)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip() and ln.strip() != "(not rendered)"]
    return f"{type(e).__name__}: {lines[0]}"[:300] if lines else type(e).__name__


@dataclass
class Record:
    """One line of a log's record file: ``workload`` (the line of its workload in the workload file,
    counting non-blank lines from 0) and ``body``, the record as MetaSchedule serialises it:
    [trace, run_secs, target, args_info]."""

    workload: int
    body: list

    @property
    def trace(self):
        return self.body[0]

    @property
    def run_secs(self):
        """The measured run times in seconds (None or [] for a candidate that did not run)."""
        return self.body[1]

    @property
    def target(self) -> dict:
        return self.body[2]

    @property
    def mean_secs(self) -> float:
        """The mean of ``run_secs``. Raises ZeroDivisionError/TypeError when it did not run."""
        return sum(self.run_secs) / len(self.run_secs)

    def with_(self, *, workload: int | None = None, run_secs=None, target=None) -> "Record":
        """A copy with the workload line, run times or target replaced."""
        body = list(self.body)
        if run_secs is not None:
            body[1] = run_secs
        if target is not None:
            body[2] = target
        return replace(self, workload=self.workload if workload is None else workload, body=body)

    def to_json(self) -> list:
        """The line as written: [workload, body]."""
        return [self.workload, self.body]


def _skipped(path: Path, lineno: int, why: str) -> None:
    warnings.warn(f"{path}:{lineno}: {why}; skipped (the log's other records still apply)", LogWarning,
                  stacklevel=4)


def _nonblank_lines(path: Path) -> list:
    """[(line number, text)] of a database file's non-blank lines (the lines MetaSchedule reads; a
    record's workload index counts these)."""
    if not path.exists():
        return []
    with open(path) as f:
        return [(n, line.rstrip("\n")) for n, line in enumerate(f, 1) if line.strip()]


def _has_blank_line(path: Path) -> bool:
    """Whether a database file holds a blank line (MetaSchedule's reader crashes the process on one)."""
    if not path.exists():
        return False
    with open(path) as f:
        return any(not line.strip() for line in f)


def _workload_problem(obj) -> str | None:
    if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], (str, int)) and isinstance(obj[1], str)):
        return "not a [structural hash, module] workload line"
    return None


def _record_problem(obj, workloads: int) -> str | None:
    """Why a parsed record line is not one MetaSchedule can read, or None. (MetaSchedule's loader
    crashes the process on some malformed records, e.g. an object instead of a list.)"""
    if not (isinstance(obj, list) and len(obj) == 2):
        return "not a [workload index, record] line"
    wl, rec = obj
    if not isinstance(wl, int) or isinstance(wl, bool) or not 0 <= wl < workloads:
        return f"workload index {wl!r} is not one of the log's {workloads} workloads"
    if not (isinstance(rec, list) and len(rec) == 4):
        return "the record is not [trace, run_secs, target, args_info]"
    trace, secs, target, args = rec
    if not (isinstance(trace, list) and len(trace) == 2 and isinstance(trace[0], list) and isinstance(trace[1], list)
            and all(isinstance(i, list) and len(i) == 4 for i in trace[0])
            and all(isinstance(d, list) and len(d) == 2 for d in trace[1])):
        return "malformed trace"
    if secs is not None and not (isinstance(secs, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in secs)):
        return "malformed run times"
    if not isinstance(target, dict) or not isinstance(args, list):
        return "malformed target or argument info"
    return None


def _write_lines(path: Path, objs) -> None:
    with artifact.atomic_file(path) as tmp:
        with open(tmp, "w") as f:
            f.write("".join(json.dumps(o) + "\n" for o in objs))


def _open_db(directory: Path):
    from tvm.s_tir import meta_schedule as ms
    return ms.database.JSONDatabase(str(directory / DB_FILES[0]), str(directory / DB_FILES[1]),
                                    allow_missing=True, module_equality="structural")


class TuningLog:
    """A tuning log folder (see the module doc). ``TuningLog(path)`` reads nothing until asked;
    ``path`` need not exist yet."""

    def __init__(self, path):
        self.path = Path(path.path if isinstance(path, TuningLog) else path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"TuningLog({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __eq__(self, other) -> bool:
        return isinstance(other, TuningLog) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def workload_file(self) -> Path:
        return self.path / DB_FILES[0]

    @property
    def record_file(self) -> Path:
        return self.path / DB_FILES[1]

    # -- where logs are --------------------------------------------------------------------------
    @classmethod
    def default(cls, info: TargetInfo) -> "TuningLog":
        """Where records go when no log is named: the user's log of the target,
        ``<cache>/tuning_logs/<tag>`` (``targets.cache_dir``); never the shipped logs."""
        return cls(cache_dir() / "tuning_logs" / info.tag)

    def seed(self, info: TargetInfo) -> "TuningLog":
        """The log a tuning run into this one starts from: this log, or, for the user's log before its
        first record, the target's shipped log (so the user's log layers their records over it)."""
        shipped = SHIPPED_LOGS / info.tag
        if self == TuningLog.default(info) and not self.record_file.exists() and (shipped / TARGET).is_file():
            return TuningLog(shipped)
        return self

    # -- the target ------------------------------------------------------------------------------
    def _must_be_folder(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"tuning log {self.path} must be a folder (a MetaSchedule database: target.json, "
                             f"{DB_FILES[0]}, {DB_FILES[1]}), not a file")

    def has_target(self) -> bool:
        """Whether the log has its target.json (a log of a known target)."""
        return (self.path / TARGET).is_file()

    def has_records(self) -> bool:
        """Whether the log has a record file."""
        return self.record_file.exists()

    def has_workloads(self) -> bool:
        """Whether the log has a workload file."""
        return self.workload_file.exists()

    def target(self) -> TargetInfo:
        """The target the log's records were measured on (its target.json).
        Raises ValueError for a file, a log without target.json or a corrupt one."""
        self._must_be_folder()
        meta = self.path / TARGET
        if not meta.exists():
            raise ValueError(f"tuning log {self.path} has no target.json: cannot tell which target it was tuned for")
        try:
            return resolve(json.loads(meta.read_text())["tvm_target"])
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{meta}: corrupt tuning log metadata ({e!r})") from None

    def check(self, info: TargetInfo, must_exist: bool) -> "TuningLog":
        """This log, validated: a folder (existing, with ``must_exist``) whose records belong to
        ``info``'s target. Its lines are checked where it is read (``open``): a bad one is skipped with
        a warning, not fatal. Raises ValueError otherwise."""
        log = self.path
        self._must_be_folder()
        meta = log / TARGET
        if not log.exists():
            if must_exist:
                raise ValueError(f"tuning log {log} does not exist")
            return self
        if meta.exists():
            try:
                recorded = json.loads(meta.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{meta}: corrupt tuning log metadata ({e})") from None
            mine = json.loads(info.target_json)
            if target_key(recorded.get("tvm_target", {})) != target_key(mine):
                raise ValueError(f"tuning log {log} holds records for target {recorded.get('tvm_target')}, "
                                 f"not {mine}: records for another target are never applied")
        elif any((log / f).exists() for f in DB_FILES):
            raise ValueError(f"tuning log {log} has no target.json: cannot tell which target it was tuned for")
        return self

    def write_target(self, info: TargetInfo) -> None:
        """Write target.json: the target the log's records are measured on."""
        artifact.write_json_atomic(self.path / TARGET, {"kind": info.kind, "tag": info.tag,
                                                        "tvm_target": json.loads(info.target_json)})

    # -- reading ---------------------------------------------------------------------------------
    def parse(self) -> tuple[list, list, bool]:
        """The readable lines of the database files: ([(line, workload json)], [(line, [workload
        position in the first list, record json])], whether every line was and none is blank: a log that
        is not clean is opened through a cleaned copy). A line that does not
        parse, or is not shaped as MetaSchedule writes it, is skipped with a ``LogWarning``; so is a
        record of a skipped workload line, and the records after it are renumbered."""
        wl_path, rec_path = self.workload_file, self.record_file
        wl_lines, rec_lines = _nonblank_lines(wl_path), _nonblank_lines(rec_path)
        workloads, position = [], {}
        for index, (n, text) in enumerate(wl_lines):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                _skipped(wl_path, n, f"corrupt workload line ({e.msg}), and every record of it")
                continue
            why = _workload_problem(obj)
            if why:
                _skipped(wl_path, n, f"{why}, and every record of it")
                continue
            position[index] = len(workloads)
            workloads.append((n, obj))
        records = []
        for n, text in rec_lines:
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                _skipped(rec_path, n, f"corrupt tuning record line ({e.msg})")
                continue
            why = _record_problem(obj, len(wl_lines))
            if why:
                _skipped(rec_path, n, why)
                continue
            if obj[0] not in position:
                _skipped(rec_path, n, f"a record of {wl_path.name} line {wl_lines[obj[0]][0]}, which was skipped")
                continue
            records.append((n, [position[obj[0]], obj[1]]))
        every = len(workloads) == len(wl_lines) and len(records) == len(rec_lines)
        return workloads, records, every and not any(_has_blank_line(p) for p in (wl_path, rec_path))

    def open(self, into) -> tuple:
        """Copy the database into the folder ``into`` without the lines MetaSchedule cannot read (each
        skipped with a ``LogWarning`` naming its file and line: one bad record never takes the others
        with it) and open the copy: (JSONDatabase, the original line number of each record line of the
        copy). A line can be unreadable as JSON, malformed, or hold a workload or trace that
        MetaSchedule cannot rebuild (a trace that no longer replays on its workload).
        Raises ValueError when MetaSchedule cannot read even the lines that passed."""
        from tvm.s_tir import meta_schedule as ms
        log, into = self.path, Path(into)
        workloads, records, clean = self.parse()
        for name in DB_FILES:
            if (into / name).exists():
                (into / name).unlink()
        if clean:  # the usual case: the files as they are
            for name in DB_FILES:
                if (log / name).exists():
                    shutil.copyfile(log / name, into / name)
        else:
            _write_lines(into / DB_FILES[0], [o for _, o in workloads])
            _write_lines(into / DB_FILES[1], [o for _, o in records])
        try:
            return _open_db(into), [n for n, _ in records]
        except Exception:  # noqa: BLE001 - a line MetaSchedule cannot rebuild: find it, line by line
            pass
        built, keep_wl, position = [], [], {}
        for k, (n, obj) in enumerate(workloads):
            try:
                built.append(ms.database.Workload.from_json(obj))
            except Exception as e:  # noqa: BLE001
                _skipped(self.workload_file, n,
                         f"a workload MetaSchedule cannot read ({first_line(e)}), and every record of it")
                continue
            position[k] = len(keep_wl)
            keep_wl.append(obj)
        keep_rec, lines = [], []
        for n, (wl, rec) in records:
            if wl not in position:
                continue
            try:
                ms.database.TuningRecord.from_json(rec, built[position[wl]])  # replays the trace on the workload
            except Exception as e:  # noqa: BLE001
                _skipped(self.record_file, n, f"its trace does not replay on its workload ({first_line(e)})")
                continue
            keep_rec.append([position[wl], rec])
            lines.append(n)
        _write_lines(into / DB_FILES[0], keep_wl)
        _write_lines(into / DB_FILES[1], keep_rec)
        try:
            return _open_db(into), lines
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"tuning log {log} cannot be read ({first_line(e)})") from None

    def scratch_db(self, into):
        """A JSONDatabase in the folder ``into`` holding this log's workload file and no record: for
        serialising new records of its workloads (a trace with an IndexMap, from RewriteLayout, has no
        Python JSON form)."""
        into = Path(into)
        (into / DB_FILES[1]).write_text("")
        shutil.copyfile(self.workload_file, into / DB_FILES[0])
        return _open_db(into)

    def records(self) -> list[Record]:
        """The log's tuning records, in file order; a line that does not parse is skipped with a
        ``LogWarning``. An absent record file holds none."""
        rows, path = [], self.record_file
        for n, text in _nonblank_lines(path):
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                _skipped(path, n, f"corrupt tuning record line ({e.msg})")
                continue
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[1], list) and len(row[1]) >= 2):
                _skipped(path, n, "not a [workload index, record] line")
                continue
            rows.append(Record(row[0], row[1]))
        return rows

    def workloads(self) -> list:
        """The workload file's lines, parsed: [structural hash, serialised IRModule] each.
        Raises OSError or JSONDecodeError for a missing or corrupt file."""
        with open(self.workload_file) as f:
            return [json.loads(line) for line in f if line.strip()]

    def workload_lines_of(self, mods: list) -> dict:
        """Workload line -> index in ``mods`` of the IRModule it holds (matched structurally)."""
        import tvm_ffi
        from tvm.s_tir import meta_schedule as ms
        logged = [ms.database.Workload.from_json(obj).mod for obj in self.workloads()]
        return {i: j for i, m in enumerate(logged) for j, mod in enumerate(mods) if tvm_ffi.structural_equal(m, mod)}

    def record_keys(self, records: list | None = None) -> list:
        """One key per record of the log (or per one of ``records``, records of this log): its
        workload's structural hash and its trace, the same for the same record in any log, wherever
        its workload line sits."""
        hashes = [obj[0] for obj in self.workloads()]
        return [(hashes[r.workload], json.dumps(r.trace)) for r in (self.records() if records is None else records)]

    def unique(self, records: list) -> list:
        """``records`` of this log without a record held twice (the first of each kept)."""
        seen, out = set(), []
        for r, key in zip(records, self.record_keys(records)):
            if key not in seen:
                seen.add(key)
                out.append(r)
        return out

    # -- writing ---------------------------------------------------------------------------------
    def write_records(self, records: list) -> None:
        """Rewrite the record file with ``records`` (Record), atomically."""
        _write_lines(self.record_file, [r.to_json() for r in records])

    def sync_from(self, work, info: TargetInfo) -> None:
        """Write the database files of the working copy ``work`` (a folder ``open`` filled) into this
        log, each atomically, the workload file first (so a record never names a workload the log does
        not hold yet); target.json first where the log has none."""
        work = Path(work)
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / TARGET).exists():
            self.write_target(info)
        for name in DB_FILES:
            if (work / name).exists():
                artifact.copy_atomic(work / name, self.path / name)

    def copy_to(self, dst, *, target: bool = True) -> "TuningLog":
        """Copy the workload file (and, with ``target``, target.json) into the folder ``dst``, made
        where missing; returns the log at ``dst`` (its records are not copied)."""
        dst = TuningLog(dst)
        dst.path.mkdir(parents=True, exist_ok=True)
        if dst != self:
            for name in (DB_FILES[0],) + ((TARGET,) if target else ()):
                shutil.copyfile(self.path / name, dst.path / name)
        return dst

    def compact(self) -> None:
        """Rewrite the workload file (atomically) without the indentation MetaSchedule puts in each
        serialised IRModule (base64 of an 8-byte length and a pretty-printed JSON graph): ~3x smaller,
        read back the same (the structural hash is stored beside it, unchanged)."""
        import base64
        lines = []
        with open(self.workload_file) as f:
            for line in f:
                if not line.strip():
                    continue
                shash, blob = json.loads(line)
                raw = base64.b64decode(blob)
                size = int.from_bytes(raw[:8], "little")
                if size != len(raw) - 8:  # not the layout this was written for: keep it as it is
                    lines.append(line.rstrip("\n"))
                    continue
                text = json.dumps(json.loads(raw[8:]), separators=(",", ":")).encode()
                lines.append(json.dumps([shash, base64.b64encode(len(text).to_bytes(8, "little") + text).decode()]))
        with artifact.atomic_file(self.workload_file) as tmp:
            with open(tmp, "w") as f:
                f.write("".join(line + "\n" for line in lines))

    # -- the files beside the database ----------------------------------------------------------
    def _json(self, name: str, unreadable_as_empty: bool = False) -> dict:
        """The side file ``name``'s content: {} where it is absent, and with ``unreadable_as_empty`` where
        it cannot be read or parsed (else a ValueError naming the file)."""
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as e:
            if unreadable_as_empty:
                return {}
            raise ValueError(f"{self.path / name}: cannot be read as JSON ({first_line(e)}); fix or remove it") from None

    def trials(self) -> dict:
        """trials.json: name -> trials measured ({} where absent)."""
        return self._json(TRIALS)

    def curves(self) -> dict:
        """curves.json: name -> tuning curve ({} where absent): ``[trial, best ms so far, seconds of
        tuning]`` at trial 0 (the best the log held before tuning, if any), at each new best and at the
        end of each run, trials and seconds counted across runs; curves summarized from the records
        alone have no seconds (``[trial, best ms]``)."""
        return self._json(CURVES)

    def update_curves(self, curves: dict) -> None:
        """Set ``curves`` (name -> curve, as ``curves()``) in curves.json, atomically; other names stay."""
        self.path.mkdir(parents=True, exist_ok=True)
        artifact.write_json_atomic(self.path / CURVES, {**self.curves(), **curves})

    def record_trials(self, trials: dict) -> None:
        """Set ``trials`` (name -> trials measured) in trials.json, atomically; other names stay."""
        artifact.write_json_atomic(self.path / TRIALS, {**self.trials(), **trials})

    def copy_trials_from(self, other: "TuningLog") -> None:
        """Replace trials.json with ``other``'s, atomically."""
        artifact.copy_atomic(other.path / TRIALS, self.path / TRIALS)

    def carried(self) -> dict:
        """carried.json: workload key -> the name of the shipped log its record was carried from
        ({} where absent or unreadable)."""
        return self._json(CARRIED, unreadable_as_empty=True)

    def record_carried(self, key: str, donor: str) -> None:
        """Note in carried.json that the record of workload ``key`` came from the shipped log ``donor``."""
        artifact.write_json_atomic(self.path / CARRIED, {**self.carried(), key: donor})

    def borrowed(self) -> dict:
        """borrowed.json: workload key -> the tuned workload (and its log) whose record was refitted to
        it ({} where absent or unreadable)."""
        return self._json(BORROWED, unreadable_as_empty=True)

    def record_borrowed(self, key: str, source: str) -> None:
        """Note in borrowed.json that the record of workload ``key`` was borrowed from ``source``."""
        artifact.write_json_atomic(self.path / BORROWED, {**self.borrowed(), key: source})
