"""Phones in log lines: all but the last 4 characters masked, wherever our lines carry them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from smsc import logs


@pytest.mark.parametrize(
    ("phone", "shown"),
    [
        ("79998887766", "*******7766"),
        ("+79998887766", "********7766"),
        ("ivan.petrov@example.ru", "******************e.ru"),  # an e-mail message's status
        ("@ivan_petrov", "********trov"),  # a Telegram recipient
        ("SMSC.RU Bank", "********Bank"),  # an alphanumeric sender
        ("12345", "*2345"),
        ("1234", "1234"),  # a short number: nobody's personal data
        ("", ""),
    ],
)
def test_mask_phone_keeps_the_last_four_characters(phone: str, shown: str) -> None:
    """All but the last 4 characters become `*`, the length kept."""
    assert logs.mask_phone(phone) == shown


@pytest.fixture
def reconfigured() -> Iterator[None]:
    """Logging configured by the test, back to its defaults afterwards.

    Requested before capsys, so that it is torn down after: configured while capsys's stream is
    still sys.stderr, every later line would go to that closed stream."""
    yield
    structlog.reset_defaults()
    logs.configure()


@pytest.mark.parametrize(
    ("fields", "masked", "full"),
    [
        pytest.param(
            {"phone": "79998887766", "id": "1001"},
            {"phone": "*******7766", "id": "1001"},
            {"phone": "79998887766", "id": "1001"},
            id="phone-key",
        ),
        pytest.param(
            {"to": "79001234567", "to_phone": "79001234567"},
            {"to": "*******4567", "to_phone": "*******4567"},
            {"to": "79001234567", "to_phone": "79001234567"},
            id="to-keys",
        ),
        pytest.param(
            {"phone": "79998887766", "reason": "incoming with an implausible 'to': '79998887766 '"},
            {"phone": "*******7766", "reason": "incoming with an implausible 'to': '********766 '"},
            {"phone": "79998887766", "reason": "incoming with an implausible 'to': '79998887766 '"},
            id="reason-quoting-a-refused-phone",
        ),
        pytest.param(
            {
                "phone": "79990001111",
                "reason": "incoming SMS id 5 is already stored with other content (request r1): "
                "phone stored '79998887766', here '79990001111'; text stored 'a', here 'b'",
            },
            {
                "phone": "*******1111",
                "reason": "incoming SMS id 5 is already stored with other content (request r1): "
                "phone stored '*******7766', here '*******1111'; text stored 'a', here 'b'",
            },
            {
                "phone": "79990001111",
                "reason": "incoming SMS id 5 is already stored with other content (request r1): "
                "phone stored '79998887766', here '79990001111'; text stored 'a', here 'b'",
            },
            id="conflict-naming-both-versions",
        ),
        pytest.param(
            {"rid": "r1", "code": 200}, {"rid": "r1", "code": 200}, {"rid": "r1", "code": 200}, id="none"
        ),
    ],
)
@pytest.mark.parametrize("mask", [True, False], ids=["masked", "full"])
def test_log_lines_mask_phones_unless_asked_for_in_full(
    reconfigured: None,
    capsys: pytest.CaptureFixture[str],
    fields: dict[str, object],
    masked: dict[str, object],
    full: dict[str, object],
    mask: bool,
) -> None:
    """A line's phone fields, and phones its reason quotes, show their last 4 characters only."""
    logs.configure(mask_phones=mask)
    structlog.get_logger("test").info("event_stored", **fields)
    line = json.loads(capsys.readouterr().err)
    assert {k: line[k] for k in fields} == (masked if mask else full)


def test_no_secret_shows_in_a_line_also_one_added_later(
    reconfigured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every secret given at start, and those of a reloaded accounts file, are redacted in any case."""
    logs.configure(secrets=["Env-Secret", "Short"])
    logs.hide(["Added-Later-1"])
    structlog.get_logger("test").info("event", a="x ENV-SECRET y", b="added-later-1", c="Short-Env-Secret")
    line = json.loads(capsys.readouterr().err)
    assert {k: line[k] for k in "abc"} == {"a": "x redacted y", "b": "redacted", "c": "redacted-redacted"}
