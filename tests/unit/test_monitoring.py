"""The alert rules, the scrape configuration and the dashboard of deploy/: promtool accepts them, every
alert is unit-tested both ways and has its runbook row, and every expression uses each metric as its
type allows (issue 10). The real scrape after traffic is tests/integration/test_monitoring_scrape.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.monitoring import (
    CONFIG,
    METRICS,
    README,
    RULE_TESTS,
    RULES,
    Use,
    all_expressions,
    dashboard,
    grafana_free,
    panel_queries,
    problems,
    rule_tests,
    rules,
    uses,
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; a machine without it fails the test, saying what to install."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's prometheus package "
            "(apt-get install prometheus; `make test` installs it when run as root)"
        )
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """`promtool test rules deploy/prometheus/alerts_test.yml` passes."""
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts alerts.yml."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_scrape_configuration() -> None:
    """`promtool check config` accepts prometheus.yml and the rule file it names."""
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query parses, checked by promtool as a recording rule (Grafana's $__ variables as 5m)."""
    queries = panel_queries()
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:query_{n}", "expr": grafana_free(q)}
            for n, q in enumerate(queries.values())
        ],
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}), encoding="utf-8")
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_refuses_a_broken_query(tmp_path: Path) -> None:
    """The check above can fail: promtool refuses a query with an unclosed call."""
    path = tmp_path / "broken.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "rate(x[5m]"}]}]})
    )
    assert promtool("check", "rules", str(path)).returncode != 0


def test_scrape_configuration_has_the_three_jobs() -> None:
    """prometheus.yml scrapes the three jobs the rules name, loads alerts.yml, and has one state exporter."""
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"smsc-ingress", "smsc-worker", "smsc-state"}
    assert config["rule_files"] == ["alerts.yml"]
    state_targets = [t for c in jobs["smsc-state"]["static_configs"] for t in c["targets"]]
    assert len(state_targets) == 1
    assert all(t.endswith(":9110") for t in state_targets)
    worker_ports = [
        int(t.rsplit(":", 1)[1]) for c in jobs["smsc-worker"]["static_configs"] for t in c["targets"]
    ]
    assert all(9201 <= p <= 9299 for p in worker_ports)


# What the issue asks to be woken for, and the alert that does it.
ISSUE_ALERTS = {
    "workers not keeping up (the oldest job's age)": "SmscQueueBacklog",
    "no live worker": "SmscNoLiveWorker",
    "new dead letters": "SmscDeadLettersNew",
    "retries exhausted (RQ's failed registry is not empty)": "SmscRetriesExhausted",
    "Redis unreachable": "SmscRedisDown",
    "an ingress not ready": "SmscIngressNotReady",
    "a burst of 403s": "SmscForbiddenBurst",
    "5xx answers": "SmscServerErrors",
    "requests arriving but no events stored": "SmscNothingStored",
    "an ingress down": "SmscIngressDown",
    "Redis's AOF off": "SmscRedisAofOff",
    "Redis's AOF failing to write": "SmscRedisAofWriteFailing",
    "any eviction": "SmscRedisEvictions",
    "a high ratio of duplicates": "SmscDuplicatesHigh",
}


@pytest.mark.parametrize(("what", "alert"), ISSUE_ALERTS.items())
def test_the_issue_s_alerts_exist(what: str, alert: str) -> None:
    """Each situation the issue names has its alert in alerts.yml."""
    assert alert in {rule["alert"] for rule in rules()}, what


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_alert_is_tested_firing_and_not_firing(rule: dict[str, object]) -> None:
    """alerts_test.yml has a case where the alert fires and one where it does not."""
    checks = [check for check in rule_tests() if check["alertname"] == rule["alert"]]
    assert any(check["exp_alerts"] for check in checks), "no case where it fires"
    assert any(not check["exp_alerts"] for check in checks), "no case where it stays quiet"


def runbook_section() -> str:
    """The README's "Alerts and their runbook", up to the next heading of its level or above."""
    text = README.read_text(encoding="utf-8")
    start = text.index("### Alerts and their runbook")
    end = re.compile(r"^#{2,3} ", re.MULTILINE).search(text, start + 1)
    return text[start : end.start() if end else len(text)]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_alert_has_severity_text_and_a_runbook_row(rule: dict[str, dict[str, str]]) -> None:
    """A severity label, a summary and a description, and a runbook annotation naming its README row."""
    name = str(rule["alert"])
    assert rule["labels"]["severity"] in ("page", "warning")
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]
    assert rule["annotations"]["runbook"] == f"README.md#{name}"
    rows = [line for line in runbook_section().splitlines() if f'<a id="{name}"></a>' in line]
    assert len(rows) == 1, f'the README needs one runbook row with <a id="{name}"></a>'
    assert re.fullmatch(r"\|[^|]+\|[^|]+\|[^|]+\|", rows[0].strip()), (
        "a row: alert, what it means, what to do"
    )


def test_every_runbook_row_has_its_alert() -> None:
    """No runbook row is left over from an alert that is gone."""
    anchors = re.findall(r'<a id="([A-Za-z]+)"></a>', runbook_section())
    assert sorted(anchors) == sorted(rule["alert"] for rule in rules())


@pytest.mark.parametrize(("where", "expr"), all_expressions().items())
def test_expression_uses_each_metric_as_its_type_allows(where: str, expr: str) -> None:
    """Agreed names only; counters through rate()/increase(); no rate() on a gauge; state gauges by max()."""
    assert uses(expr), "no metric found in the expression"
    assert problems(expr) == []


def test_dashboard_shows_every_agreed_metric() -> None:
    """Every agreed metric has a panel."""
    shown = {use.base for expr in panel_queries().values() for use in uses(expr)}
    assert set(METRICS) - shown == set()


def test_dashboard_datasource_is_a_variable() -> None:
    """Panels query the datasource chosen in the ${DS_PROMETHEUS} variable, so it imports anywhere."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    sources = [p["datasource"] for p in panels] + [t["datasource"] for p in panels for t in p["targets"]]
    assert {s["uid"] for s in sources} == {"${DS_PROMETHEUS}"}


@pytest.mark.parametrize(
    ("expr", "found"),
    [
        (
            'sum by (le) (rate(smsc_worker_lag_seconds_bucket{kind="status", outcome=~"a|b"}[5m]))',
            [
                Use(
                    "smsc_worker_lag_seconds_bucket",
                    (("kind", "=", "status"), ("outcome", "=~", "a|b")),
                    ("sum", "rate"),
                )
            ],
        ),
        (
            "max(smsc_queue_jobs) by (instance) > max(smsc_queue_jobs offset 15m)",
            [Use("smsc_queue_jobs", (), ("max",)), Use("smsc_queue_jobs", (), ("max",))],
        ),
        (
            "histogram_quantile(0.9, sum without (pid) (rate(smsc_ingress_job_requests_bucket[$__range])))",
            [Use("smsc_ingress_job_requests_bucket", (), ("histogram_quantile", "sum", "rate"))],
        ),
        (
            'up{job="smsc-ingress"} == 0 or (absent(up{job="smsc-state"}))',
            [
                Use("up", (("job", "=", "smsc-ingress"),), ()),
                Use("up", (("job", "=", "smsc-state"),), ("", "absent")),
            ],
        ),
    ],
)
def test_reader_finds_selectors_and_the_calls_around_them(expr: str, found: list[Use]) -> None:
    """The PromQL reader sees each selector, its matchers, and its calls and aggregations, outermost first."""
    assert uses(expr) == found


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("max(rate(smsc_queue_jobs[5m]))", "smsc_queue_jobs: a gauge, used through rate()"),
        (
            "sum(increase(smsc_ingress_backpressure[5m]))",
            "smsc_ingress_backpressure: a gauge, used through increase()",
        ),
        (
            "sum(smsc_ingress_backpressure)",
            "smsc_ingress_backpressure: a gauge, combined with sum() instead of max()",
        ),
        (
            "avg(smsc_ingress_redis_up)",
            "smsc_ingress_redis_up: a gauge, combined with avg() instead of max()",
        ),
        (
            "sum(avg_over_time(smsc_ingress_requests_total[5m]))",
            "smsc_ingress_requests_total: a counter, used through avg_over_time(), not rate()/increase()",
        ),
        (
            "max_over_time(smsc_worker_lag_seconds_count[1h])",
            "smsc_worker_lag_seconds_count: a counter, used through max_over_time(), not rate()/increase()",
        ),
        (
            "smsc_worker_events_total > 0",
            "smsc_worker_events_total: a counter, used through nothing(), not rate()/increase()",
        ),
        (
            "smsc_queue_jobs > 10",
            "smsc_queue_jobs: the exporter's, combined with nothing(), not max()",
        ),
        (
            "min(smsc_redis_up) == 0",
            "smsc_redis_up: the exporter's, combined with min(), not max()",
        ),
        (
            "sum(increase(smsc_redis_evicted_keys_total[5m]))",
            "smsc_redis_evicted_keys_total: the exporter's, combined with sum(), not max()",
        ),
        ("max(smsc_queue_length)", "smsc_queue_length: not an agreed metric (tests/monitoring.py, METRICS)"),
        (
            "rate(smsc_worker_lag_seconds[5m])",
            "smsc_worker_lag_seconds: not an agreed metric (tests/monitoring.py, METRICS)",
        ),
    ],
)
def test_checker_names_each_misuse(expr: str, complaint: str) -> None:
    """The expression check can fail: each misuse the issue forbids is named."""
    assert complaint in problems(expr)
