"""Figures of a benchmark: the table printed and the JSON written to bench-results/."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.config import FILL_CONNECTIONS, FILL_EVENTS, JOB_SIZE, RESULTS_DIR, ROOT, RUNS

# A 1-minute load average above this at the start means someone else is using the machine.
BUSY_LOAD = 0.5


@dataclass
class Row:
    """One line of a section's table: a thing measured, with the values of each run per column."""

    key: str
    label: str
    short: str  # in ratio lines
    cells: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    digits: int  # decimals printed


@dataclass(frozen=True)
class Ratio:
    """median(numerator) / median(denominator) of one column."""

    numerator: str
    denominator: str
    column: str


@dataclass
class Section:
    key: str
    title: str
    columns: list[Column]
    notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)  # printed under the ratios: verdicts on targets

    def row(self, key: str, label: str, short: str = "") -> Row:
        """The row `key`, added on first use."""
        for existing in self.rows:
            if existing.key == key:
                return existing
        self.rows.append(Row(key, label, short or label))
        return self.rows[-1]

    def add(self, row: str, label: str, **values: float) -> None:
        """Record one run's values of `row`."""
        cells = self.row(row, label).cells
        for column, value in values.items():
            cells.setdefault(column, []).append(value)

    def median(self, row: str, column: str) -> float | None:
        for r in self.rows:
            if r.key == row and r.cells.get(column):
                return statistics.median(r.cells[column])
        return None


@dataclass
class Results:
    """Everything a run of the benchmark found, including what went wrong."""

    meta: dict[str, Any]
    sections: list[Section] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        """A failure of the product or of the benchmark: printed at once, loudly, and in the summary."""
        self.problems.append(text)
        print(f"\n!!!!! PROBLEM: {text}\n", flush=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "sections": {
                s.key: {
                    "title": s.title,
                    "notes": s.notes,
                    "rows": {
                        r.key: {
                            "label": r.label,
                            **{
                                c: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
                                for c, v in r.cells.items()
                                if v
                            },
                        }
                        for r in s.rows
                    },
                    "ratios": [
                        {
                            "numerator": q.numerator,
                            "denominator": q.denominator,
                            "column": q.column,
                            "value": _ratio(s, q),
                        }
                        for q in s.ratios
                    ],
                    "footer": s.footer,
                }
                for s in self.sections
            },
            "problems": self.problems,
        }


def _ratio(section: Section, ratio: Ratio) -> float | None:
    num = section.median(ratio.numerator, ratio.column)
    den = section.median(ratio.denominator, ratio.column)
    return None if num is None or not den else num / den


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    mid = _number(statistics.median(values), digits)
    if len(values) == 1:
        return mid
    return f"{mid} [{_number(min(values), digits)}–{_number(max(values), digits)}]"


def _previous_median(previous: dict[str, Any], section: str, row: str, column: str) -> float | None:
    try:
        return float(previous["sections"][section]["rows"][row][column]["median"])
    except (KeyError, TypeError, ValueError):
        return None


def render(results: Results, previous: dict[str, Any] | None, previous_name: str = "latest.json") -> str:
    """The table: each figure the median of the runs [min–max]; the first column also vs the last run."""
    meta = results.meta
    lines = [
        f"smsc-ingest benchmark  {meta['date']}  commit {meta['commit']}  "
        f"{meta['cpus']} CPUs ({meta['cpu_model']})",
        f"each figure: {_runs(meta['runs'])}; 'prev': the first column's median against "
        f"the previous bench-results/{previous_name}",
    ]
    busy = meta.get("load_average_at_start", 0)
    if busy > BUSY_LOAD:
        lines.append(
            f"WARNING: load average {busy} when the benchmark started: other processes share the CPUs, "
            "the figures are noisy"
        )
    for s in results.sections:
        lines += ["", s.title, *(f"  {n}" for n in s.notes), *_table(s, previous), *_ratios(s)]
        lines += [f"  {f}" for f in s.footer]
    lines.append("")
    if results.problems:
        lines.append(f"PROBLEMS ({len(results.problems)}):")
        lines += [f"  !! {p}" for p in results.problems]
    else:
        lines.append("no problems: every 2xx was queued, every queued event stored, no error logged")
    return "\n".join(lines)


def _runs(runs: int) -> str:
    return "one run" if runs == 1 else f"median [min–max] of {runs} runs"


def _table(s: Section, previous: dict[str, Any] | None) -> list[str]:
    label_width = max((len(r.label) for r in s.rows), default=10)
    cells = [[_cell(r.cells.get(c.key, []), c.digits) for c in s.columns] for r in s.rows]
    widths = [max([len(c.header), *(len(row[i]) for row in cells)]) for i, c in enumerate(s.columns)]
    headers = "".join(f"  {c.header.rjust(w)}" for c, w in zip(s.columns, widths, strict=True))
    lines = ["  " + "".ljust(label_width) + headers + "     prev"]
    first = s.columns[0].key
    for r, row_cells in zip(s.rows, cells, strict=True):
        now = s.median(r.key, first)
        before = _previous_median(previous, s.key, r.key, first) if previous else None
        change = f"{(now / before - 1) * 100:+6.1f}%" if now is not None and before else "      -"
        figures = "".join(f"  {t.rjust(w)}" for t, w in zip(row_cells, widths, strict=True))
        lines.append("  " + r.label.ljust(label_width) + figures + f"  {change}")
    return lines


def _ratios(s: Section) -> list[str]:
    """One line per numerator and column: its median over each reference's median."""
    rows = {r.key: r for r in s.rows}
    lines = []
    for numerator, column in dict.fromkeys((q.numerator, q.column) for q in s.ratios):
        if numerator not in rows:
            continue
        parts = []
        for q in (q for q in s.ratios if (q.numerator, q.column) == (numerator, column)):
            value = _ratio(s, q)
            name = rows[q.denominator].short if q.denominator in rows else q.denominator
            parts.append(f"{name} {'-' if value is None else f'{value:.2f}x'}")
        header = next((c.header for c in s.columns if c.key == column), column)
        lines.append(f"  {rows[numerator].label} / reference ({header}): " + " · ".join(parts))
    return lines


def load_previous(name: str = "latest.json") -> dict[str, Any] | None:
    """The figures bench-results/<name> holds, for the 'prev' column."""
    path = RESULTS_DIR / name
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


def save(results: Results, table: str) -> Path:
    """Write latest.json, a timestamped copy, and the table beside them; the copy's path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    copy = save_as(results, table, f"bench-{stamp}.json")
    (RESULTS_DIR / "latest.json").write_text(copy.read_text(encoding="utf-8"), encoding="utf-8")
    (RESULTS_DIR / "latest.txt").write_text(table + "\n", encoding="utf-8")
    return copy


def save_as(results: Results, table: str, name: str) -> Path:
    """Write the figures and the table to RESULTS_DIR/`name`; its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    text = json.dumps({**results.to_json(), "table": table}, indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def machine() -> dict[str, Any]:
    """Where and on what this ran, so that two result files can be compared."""
    commit = _output(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    if _output(["git", "status", "--porcelain", "--", "smsc", "ingress", "workers", "schema.sql"]):
        commit += "+changes"
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in (_output(["lscpu"]) or "").splitlines()
            if "Model name" in line
        ),
        platform.processor(),
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "wrk": _output(["wrk", "-v"], any_exit=True).split(" [")[0],
        "packages": {p: version(p) for p in ("aiohttp", "redis", "rq", "psycopg", "uvloop")},
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "runs": RUNS,
        "worker_job_size": JOB_SIZE,
        "worker_fill": {"events": FILL_EVENTS, "connections": FILL_CONNECTIONS},
    }


def _output(argv: list[str], any_exit: bool = False) -> str:
    """What `argv` printed, or "" if it failed (`wrk -v` exits 1 after printing its version)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT, check=False)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 or any_exit else ""
