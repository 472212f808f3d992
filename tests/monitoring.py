"""What the dashboard and the alert rules ask Prometheus for: their PromQL, read from deploy/, and the
metric names in it, each typed from the agreed list of metrics (the names the code exports).

The PromQL reader is deliberately small: it knows selectors, label matchers, function calls and
aggregations with `by`/`without`, which is all our expressions use; promtool checks their syntax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts_test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "smsc-ingest.json"
README = ROOT / "README.md"

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
INGRESS, WORKER, STATE = "smsc-ingress", "smsc-worker", "smsc-state"

# The agreed metrics (issue 10): name as exposed (a Counter with its _total) -> type, Prometheus job
# (None: every job). `up` is Prometheus's own, per target.
METRICS: dict[str, tuple[str, str | None]] = {
    "up": (GAUGE, None),
    "smsc_build_info": (GAUGE, None),
    "smsc_ingress_requests_total": (COUNTER, INGRESS),
    "smsc_ingress_request_duration_seconds": (HISTOGRAM, INGRESS),
    "smsc_ingress_redis_write_duration_seconds": (HISTOGRAM, INGRESS),
    "smsc_ingress_job_requests": (HISTOGRAM, INGRESS),
    "smsc_ingress_backpressure": (GAUGE, INGRESS),
    "smsc_ingress_redis_up": (GAUGE, INGRESS),
    "smsc_worker_events_total": (COUNTER, WORKER),
    "smsc_worker_job_duration_seconds": (HISTOGRAM, WORKER),
    "smsc_worker_job_requests": (HISTOGRAM, WORKER),
    "smsc_worker_job_failures_total": (COUNTER, WORKER),
    "smsc_worker_lag_seconds": (HISTOGRAM, WORKER),
    "smsc_queue_jobs": (GAUGE, STATE),
    "smsc_queue_oldest_job_age_seconds": (GAUGE, STATE),
    "smsc_queue_registry_jobs": (GAUGE, STATE),
    "smsc_workers_alive": (GAUGE, STATE),
    "smsc_dead_letters_waiting": (GAUGE, STATE),
    "smsc_redis_up": (GAUGE, STATE),
    "smsc_postgres_up": (GAUGE, STATE),
    "smsc_redis_aof_enabled": (GAUGE, STATE),
    "smsc_redis_aof_last_write_ok": (GAUGE, STATE),
    "smsc_redis_evicted_keys_total": (COUNTER, STATE),
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")

# Range functions for counters only, and those that mean nothing on a counter (they would follow its
# resets and its ever-growing value).
COUNTER_FUNCTIONS = {"rate", "irate", "increase", "resets"}
GAUGE_FUNCTIONS = {
    "delta",
    "idelta",
    "deriv",
    "predict_linear",
    "holt_winters",
    "changes",
    *(f"{f}_over_time" for f in ("avg", "min", "max", "sum", "quantile", "stddev", "stdvar")),
}
AGGREGATIONS = {
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
}
# Keywords followed by a list of label names in parentheses, not by an expression.
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Keywords that may stand before a parenthesis without being a call.
OPERATORS = {"and", "or", "unless", "bool"}
NAME = re.compile(r"smsc_[a-z_]+|up")

TOKEN = re.compile(
    r"""(?P<space>\s+|\#[^\n]*)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<range>\[[^\]]*\])
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<number>[0-9.][0-9A-Za-z.]*)
    |(?P<variable>\$\{?[A-Za-z_]+\}?)
    |(?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){},])""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Use:
    """One metric selector in an expression, and the calls it stands inside (outermost first)."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]
    calls: tuple[str, ...]

    @property
    def base(self) -> str:
        """The agreed metric: a histogram's _bucket, _sum and _count series are its own."""
        for suffix in HISTOGRAM_SERIES:
            stem = self.name.removesuffix(suffix)
            if stem != self.name and METRICS.get(stem, ("", None))[0] == HISTOGRAM:
                return stem
        return self.name


def tokens(expr: str) -> list[tuple[str, str]]:
    """The expression's tokens as (kind, text), spaces and comments left out."""
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(expr):
        match = TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[position : position + 20]!r} in {expr!r}")
        position = match.end()
        kind = match.lastgroup or ""
        if kind != "space":
            found.append((kind, match.group()))
    return found


def uses(expr: str) -> list[Use]:
    """Every selector of an agreed-looking metric name (smsc_... and up) in `expr`."""
    toks = tokens(expr)
    found: list[Use] = []
    stack: list[str] = []  # what each open parenthesis belongs to: a call, or "" for grouping
    aggregation = ""  # an aggregation whose `by (...)` came before its parenthesis
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "ident" and text in LABEL_LISTS:
            i = _after_parentheses(toks, i + 1) if following == "(" else i + 1
            continue
        if kind == "ident" and following == "(" and text not in OPERATORS:
            stack.append(text)
            i += 2
            continue
        if kind == "ident" and text in AGGREGATIONS and following in LABEL_LISTS:
            aggregation = text
        elif kind == "ident" and NAME.fullmatch(text):
            matchers: tuple[tuple[str, str, str], ...] = ()
            if following == "{":
                end = _after_braces(toks, i + 1)
                matchers = _matchers(toks[i + 2 : end - 1])
                i = end - 1
            found.append(Use(text, matchers, tuple(stack)))
        elif text == "(":
            stack.append(aggregation)
            aggregation = ""
        elif text == ")":
            stack.pop()
        i += 1
    return found


def _after_parentheses(toks: list[tuple[str, str]], start: int) -> int:
    end = next(j for j in range(start, len(toks)) if toks[j][1] == ")")
    return end + 1


def _after_braces(toks: list[tuple[str, str]], start: int) -> int:
    end = next(j for j in range(start, len(toks)) if toks[j][1] == "}")
    return end + 1


def _matchers(toks: list[tuple[str, str]]) -> tuple[tuple[str, str, str], ...]:
    """`label op "value"` triples of a selector's braces, the value unquoted."""
    items = [text for kind, text in toks if text != ","]
    return tuple(
        (items[j], items[j + 1], json.loads(items[j + 2]) if items[j + 2][0] == '"' else items[j + 2][1:-1])
        for j in range(0, len(items), 3)
    )


def metric_type(name: str) -> str | None:
    """counter or gauge, as Prometheus sees the exposed series; None for a name not agreed."""
    use = Use(name, (), ())
    if use.base != name:
        return COUNTER  # a histogram's _bucket, _sum and _count only grow
    kind = METRICS.get(name, (None, None))[0]
    return None if kind == HISTOGRAM else kind  # a histogram is queried through its series


def problems(expr: str) -> list[str]:
    """What is wrong with how `expr` uses each metric, by the rules of issue 10:

    - every name is an agreed metric (a histogram through its _bucket, _sum or _count);
    - a counter only through rate(), irate() or increase(), never *_over_time() or delta();
    - a gauge never through rate(), irate(), increase(), and never summed or averaged over instances;
    - what the queue-state exporter exports is combined with max(), since a second exporter would
      double a sum.
    """
    found: list[str] = []
    for use in uses(expr):
        kind = metric_type(use.name)
        if kind is None:
            found.append(f"{use.name}: not an agreed metric (tests/monitoring.py, METRICS)")
            continue
        ranged = [c for c in use.calls if c in COUNTER_FUNCTIONS | GAUGE_FUNCTIONS]
        innermost = ranged[-1] if ranged else None
        aggregated = [c for c in use.calls if c in AGGREGATIONS]
        combined = aggregated[-1] if aggregated else None
        if kind == COUNTER and innermost not in COUNTER_FUNCTIONS - {"resets"}:
            found.append(
                f"{use.name}: a counter, used through {innermost or 'nothing'}(), not rate()/increase()"
            )
        if kind == GAUGE and innermost in COUNTER_FUNCTIONS:
            found.append(f"{use.name}: a gauge, used through {innermost}()")
        if kind == GAUGE and combined in ("sum", "avg"):
            found.append(f"{use.name}: a gauge, combined with {combined}() instead of max()")
        if METRICS[use.base][1] == STATE and combined != "max":
            found.append(f"{use.name}: the exporter's, combined with {combined or 'nothing'}(), not max()")
    return found


def rules() -> list[dict[str, Any]]:
    """The alerting rules of alerts.yml (one group)."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def rule_tests() -> list[dict[str, Any]]:
    """The `alert_rule_test` entries of alerts_test.yml, across its test cases."""
    cases = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    return [check for case in cases for check in case.get("alert_rule_test", [])]


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard, as JSON."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panel_queries() -> dict[str, str]:
    """Every query of the dashboard's panels, by "panel title/refId"."""
    found: dict[str, str] = {}
    for panel in _panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            found[f"{panel['title']}/{target['refId']}"] = target["expr"]
    return found


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def all_expressions() -> dict[str, str]:
    """Every PromQL expression of the rules ("rule NAME") and of the dashboard ("panel TITLE/REF")."""
    found = {f"rule {rule['alert']}": rule["expr"] for rule in rules()}
    found.update({f"panel {key}": expr for key, expr in panel_queries().items()})
    return found


def grafana_free(expr: str) -> str:
    """`expr` with Grafana's interval variables replaced by a duration, as Prometheus would get it."""
    return re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
