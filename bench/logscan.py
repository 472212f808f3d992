"""What the product complained about in its logs during a run (warnings, errors, exceptions)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from bench.config import LOG_DIR

LOUD_LEVELS = ("warning", "error", "critical", "exception")
# Job ids, request ids and worker names make every line unique: counted without them.
IDS = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")


def complaints(log_name: str, log_dir: Path = LOG_DIR) -> Counter[str]:
    """Warning and error lines of bench-results/logs/<log_name>.log, and exceptions, counted by kind."""
    found: Counter[str] = Counter()
    path = log_dir / f"{log_name}.log"
    if not path.exists():
        return found
    in_traceback = False
    with path.open(encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.rstrip()
            if in_traceback:
                if line[:1].isspace() or not line:
                    continue
                # The first unindented line after a traceback is the exception itself.
                in_traceback = False
                found[f"exception {line[:160]}"] += 1
                continue
            if line.startswith("Traceback"):
                in_traceback = True
            elif line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                level = str(entry.get("level", "")).lower()
                if level in LOUD_LEVELS:
                    found[f"{level} {entry.get('event')} {entry.get('reason', '')}".strip()] += 1
            elif line.startswith(("WARNING", "ERROR", "CRITICAL")):
                found[IDS.sub("*", line)[:160]] += 1
    return found


def summary(found: Counter[str]) -> str:
    return "; ".join(f"{n} x {what}" for what, n in found.most_common(4))
