"""verify(): the hash of `<control fields>:<secret>` the gateway puts in place of the URL's secret."""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from smsc.exceptions import BadRequest, InvalidSignature, PermanentError
from smsc.protocol import signature
from smsc.protocol.decode import Decoded, decode
from smsc.protocol.fields import HashAlgorithm, Kind
from smsc.protocol.normalize import normalize
from smsc.protocol.signature import accepted_forms, control_string, verify
from tests.payloads import (
    ALGORITHMS,
    CHARSETS,
    FORMATS,
    KINDS,
    PY_CODEC,
    SAMPLES,
    SECRET,
    Request,
    build,
    sign,
)

MATRIX = [
    (k, f, c, a)
    for k in KINDS
    for f in FORMATS
    for c in CHARSETS
    for a in ALGORITHMS
    if c != "koi8-r" or f == "form"
]
# Call timestamps whose control string has a crc32 above 2**31 (negative when signed) and below 2**28
# (a leading zero in 8 hex digits); both facts are checked in the test.
CRC_HIGH_TS = "1700000200"
CRC_LOW_TS = "1700000283"


def decoded(req: Request) -> Decoded:
    """The request as decode() reads it."""
    return decode(req.body, req.query, req.content_type, "windows-1251")


def with_params(d: Decoded, **changes: str) -> Decoded:
    """The same decoded request with some parameters replaced."""
    return dataclasses.replace(d, params={**d.params, **changes})


@pytest.mark.parametrize(
    ("kind", "fmt", "charset", "algorithm"), MATRIX, ids=["-".join(row) for row in MATRIX]
)
def test_a_gateway_hash_verifies(kind: str, fmt: str, charset: str, algorithm: str) -> None:
    """A request signed as the gateway does verifies for every kind, format, charset and algorithm."""
    verify(decoded(build(kind, fmt, charset, algorithm)), HashAlgorithm(algorithm), SECRET)


@pytest.mark.parametrize("algorithm", ["md5", "sha1"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_upper_case_hex_hash_verifies(kind: str, algorithm: str) -> None:
    """md5 and sha1 hashes are accepted in upper-case hex as well."""
    d = decoded(build(kind, "form", "utf-8", algorithm))
    upper = sign(kind, SAMPLES[kind], algorithm).upper()
    assert d.params[algorithm] != upper
    verify(with_params(d, **{algorithm: upper}), HashAlgorithm(algorithm), SECRET)


@pytest.mark.parametrize(
    ("ts", "form"),
    [
        pytest.param(CRC_HIGH_TS, "unsigned", id="high-unsigned"),
        pytest.param(CRC_HIGH_TS, "signed", id="high-signed"),
        pytest.param(CRC_HIGH_TS, "hex", id="high-hex"),
        pytest.param(CRC_HIGH_TS, "HEX", id="high-upper-hex"),
        pytest.param(CRC_LOW_TS, "unsigned", id="low-unsigned"),
        pytest.param(CRC_LOW_TS, "signed", id="low-signed"),
        pytest.param(CRC_LOW_TS, "hex", id="low-hex-leading-zero"),
    ],
)
def test_crc32_verifies_as_unsigned_signed_or_hex(ts: str, form: str) -> None:
    """crc32 is accepted as an unsigned decimal, a signed 32-bit decimal and 8 hex digits."""
    params = dict(SAMPLES["call"], ts=ts)
    crc = zlib.crc32(f"{params['phone']}:{ts}:{SECRET}".encode())
    assert crc >= 1 << 31 if ts == CRC_HIGH_TS else crc < 1 << 28
    req = build("call", "form", "utf-8", "crc32", params, crc_form=form.lower())
    d = decoded(req)
    if form == "HEX":
        d = with_params(d, crc32=d.params["crc32"].upper())
    verify(d, HashAlgorithm.CRC32, SECRET)


CROSS = [
    ("form", "koi8-r", "utf-8"),
    ("form", "koi8-r", "cp1251"),
    ("form", "utf-8", "cp1251"),
    ("form", "windows-1251", "utf-8"),
    ("json", "utf-8", "cp1251"),
    ("json", "windows-1251", "utf-8"),
    ("xml", "utf-8", "cp1251"),
    ("xml", "windows-1251", "utf-8"),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    ("fmt", "charset", "hash_codec"), CROSS, ids=[f"{f}-sent-{c}-signed-{h}" for f, c, h in CROSS]
)
def test_a_cyrillic_mes_signed_in_utf8_or_cp1251_verifies_whatever_the_transmission_charset(
    fmt: str, charset: str, hash_codec: str, algorithm: str
) -> None:
    """A non-ASCII `mes` hashed over utf-8 or windows-1251 bytes verifies when sent in another charset."""
    params = SAMPLES["incoming"]
    assert sign("incoming", params, algorithm, codec=hash_codec) != sign(
        "incoming", params, algorithm, codec=PY_CODEC[charset]
    )
    req = build("incoming", fmt, charset, algorithm, hash_codec=hash_codec)
    verify(decoded(req), HashAlgorithm(algorithm), SECRET)


TAMPER = [
    ("status", "id", "1002"),
    ("status", "phone", "79998887767"),
    ("status", "status", "3"),
    ("incoming", "phone", "79998887767"),
    ("incoming", "mes", "Привет, мир?"),
    ("incoming", "mes", ""),
    ("incoming", "to", "79001234568"),
    ("call", "phone", "79998887767"),
    ("call", "ts", "1700000201"),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("kind", "field", "value"), TAMPER, ids=[f"{k}-{f}-{v}" for k, f, v in TAMPER])
def test_a_changed_control_field_is_refused(kind: str, field: str, value: str, algorithm: str) -> None:
    """Changing any field of the control string after signing makes the hash invalid."""
    d = decoded(build(kind, "form", "utf-8", algorithm))
    verify(d, HashAlgorithm(algorithm), SECRET)
    with pytest.raises(InvalidSignature):
        verify(with_params(d, **{field: value}), HashAlgorithm(algorithm), SECRET)


def _wrong_hashes() -> list[object]:
    good = sign("status", SAMPLES["status"], "md5")
    other = sign("status", dict(SAMPLES["status"], status="3"), "md5")
    return [
        pytest.param("", id="empty"),
        pytest.param("0" * 32, id="zeros"),
        pytest.param(other, id="hash-of-another-status"),
        pytest.param(good + "0", id="one-digit-more"),
        pytest.param(good[:-1], id="one-digit-less"),
        pytest.param(hashlib.md5(b"1001:79998887766:1:").hexdigest(), id="without-secret"),
        pytest.param(hashlib.md5(b"1001:79998887766:1").hexdigest(), id="without-secret-or-colon"),
        pytest.param(hashlib.md5(f"{SECRET}:1001:79998887766:1".encode()).hexdigest(), id="secret-first"),
        pytest.param(hashlib.sha1(f"1001:79998887766:1:{SECRET}".encode()).hexdigest(), id="sha1-in-md5"),
    ]


@pytest.mark.parametrize("value", _wrong_hashes())
def test_a_wrong_hash_is_refused(value: str) -> None:
    """A hash that is not the md5 of this request's control string is refused."""
    d = decoded(build("status", "form", "utf-8", "md5"))
    with pytest.raises(InvalidSignature):
        verify(with_params(d, md5=value), HashAlgorithm.MD5, SECRET)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_request_without_a_hash_is_refused(kind: str, algorithm: str) -> None:
    """A request that carries no hash parameter at all is refused."""
    d = decoded(build(kind, "form", "utf-8", algorithm=None))
    with pytest.raises(InvalidSignature):
        verify(d, HashAlgorithm(algorithm), SECRET)


DOWNGRADES = [(sent, configured) for sent in ALGORITHMS for configured in ALGORITHMS if sent != configured]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("sent", "configured"), DOWNGRADES, ids=[f"{s}-for-{c}" for s, c in DOWNGRADES])
def test_a_hash_of_another_algorithm_is_refused(sent: str, configured: str, kind: str) -> None:
    """A correct hash of another algorithm than the configured one is refused: no downgrade."""
    d = decoded(build(kind, "form", "utf-8", sent))
    verify(d, HashAlgorithm(sent), SECRET)
    with pytest.raises(InvalidSignature):
        verify(d, HashAlgorithm(configured), SECRET)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "sent",
    [SECRET, SECRET.upper(), SECRET.lower(), f" {SECRET} "],
    ids=["as-is", "upper", "lower", "spaces"],
)
def test_the_secret_itself_in_place_of_the_hash_is_refused(sent: str, algorithm: str) -> None:
    """A request that carries the raw secret as its hash is refused."""
    d = decoded(build("status", "form", "utf-8", algorithm))
    with pytest.raises(InvalidSignature):
        verify(with_params(d, **{algorithm: sent}), HashAlgorithm(algorithm), SECRET)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_secret_left_in_the_query_string_is_refused(fmt: str, algorithm: str) -> None:
    """A body without a hash, whose query string still carries the secret, is refused."""
    req = build("status", fmt, "utf-8", algorithm=None)
    d = decoded(dataclasses.replace(req, query=f"{req.query}&{algorithm}={SECRET}"))
    assert d.params[algorithm] == SECRET
    with pytest.raises(InvalidSignature):
        verify(d, HashAlgorithm(algorithm), SECRET)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "secret", ["another-secret", SECRET.upper(), SECRET + "x"], ids=["other", "upper", "longer"]
)
def test_a_hash_made_with_another_secret_is_refused(secret: str, kind: str, algorithm: str) -> None:
    """A hash made with any secret but the configured one is refused."""
    d = decoded(build(kind, "form", "utf-8", algorithm, secret=secret))
    with pytest.raises(InvalidSignature):
        verify(d, HashAlgorithm(algorithm), SECRET)


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        pytest.param(Kind.STATUS, SAMPLES["status"], f"1001:79998887766:1:{SECRET}", id="status"),
        pytest.param(
            Kind.INCOMING,
            SAMPLES["incoming"],
            f"79998887766:Привет, мир!:79001234567:{SECRET}",
            id="incoming",
        ),
        pytest.param(Kind.CALL, SAMPLES["call"], f"79998887766:1700000200:{SECRET}", id="call"),
        pytest.param(Kind.STATUS, {"id": "1001", "status": "1"}, f"1001::1:{SECRET}", id="missing-as-empty"),
        pytest.param(Kind.INCOMING, {"phone": "7", "mes": "", "to": "8"}, f"7::8:{SECRET}", id="empty-mes"),
        pytest.param(
            Kind.INCOMING, {"phone": "7", "mes": "a:b", "to": "8"}, f"7:a:b:8:{SECRET}", id="colon-in-mes"
        ),
    ],
)
def test_control_string_joins_the_kind_fields_and_the_secret(
    kind: Kind, params: dict[str, str], expected: str
) -> None:
    """The control string is the kind's fields, missing ones empty, then the secret, joined by ':'."""
    assert control_string(kind, params, SECRET) == expected


# Each kind's sample and its control string written out by hand, for signature.sign() to hash.
CONTROL_TEXT = {
    Kind.STATUS: f"1001:79998887766:1:{SECRET}",
    Kind.INCOMING: f"79998887766:Привет, мир!:79001234567:{SECRET}",
    Kind.CALL: f"79998887766:1700000200:{SECRET}",
}
SIGNED = [
    (kind, algorithm, codec)
    for kind in Kind
    for algorithm in HashAlgorithm
    for codec in ("utf-8", "koi8_r", "cp1251")
]


def _independent_hash(algorithm: HashAlgorithm, data: bytes) -> str:
    if algorithm is HashAlgorithm.MD5:
        return hashlib.md5(data).hexdigest()
    if algorithm is HashAlgorithm.SHA1:
        return hashlib.sha1(data).hexdigest()
    return str(zlib.crc32(data) & 0xFFFFFFFF)


@pytest.mark.parametrize(("kind", "algorithm", "codec"), SIGNED, ids=[f"{k}-{a}-{c}" for k, a, c in SIGNED])
def test_sign_hashes_the_control_string_in_the_given_codec(
    kind: Kind, algorithm: HashAlgorithm, codec: str
) -> None:
    """sign() hashes the kind's control string in `codec`: lower-case hex, crc32 as unsigned decimal."""
    expected = _independent_hash(algorithm, CONTROL_TEXT[kind].encode(codec))
    assert signature.sign(kind, SAMPLES[kind.value], algorithm, SECRET, codec) == expected


def test_sign_gives_crc32_as_php_prints_it() -> None:
    """A crc32 above 2**31 is signed as its unsigned decimal, not negative (hand-checked value)."""
    assert signature.sign(Kind.CALL, {"phone": "te", "ts": "st"}, HashAlgorithm.CRC32, "z", "utf-8") == (
        "2313722925"
    )
    assert (
        signature.sign(Kind.STATUS, {}, HashAlgorithm.MD5, "s", "utf-8") == hashlib.md5(b":::s").hexdigest()
    )


@pytest.mark.parametrize(
    ("kind", "fmt", "charset", "algorithm"), MATRIX, ids=["-".join(row) for row in MATRIX]
)
def test_what_sign_gives_verifies(kind: str, fmt: str, charset: str, algorithm: str) -> None:
    """A request whose hash signature.sign() made, in the transmission charset, passes verify()."""
    d = decoded(build(kind, fmt, charset, algorithm))
    hashed = signature.sign(Kind(kind), d.params, HashAlgorithm(algorithm), SECRET, PY_CODEC[charset])
    verify(with_params(d, **{algorithm: hashed}), HashAlgorithm(algorithm), SECRET)


def _crc_forms(data: bytes) -> set[str]:
    value = zlib.crc32(data) & 0xFFFFFFFF
    signed = value - (1 << 32) if value & (1 << 31) else value
    return {str(value), str(signed), format(value, "08x")}


ACCEPTED_DATA = [b"", b"abc", b"test", "Привет".encode("cp1251"), "Привет".encode(), b"33"]
ACCEPTED = [
    *[(HashAlgorithm.MD5, d, {hashlib.md5(d).hexdigest()}) for d in ACCEPTED_DATA],
    *[(HashAlgorithm.SHA1, d, {hashlib.sha1(d).hexdigest()}) for d in ACCEPTED_DATA],
    *[(HashAlgorithm.CRC32, d, _crc_forms(d)) for d in ACCEPTED_DATA],
]


@pytest.mark.parametrize(
    ("algorithm", "data", "expected"),
    ACCEPTED,
    ids=[f"{a.value}-{d.hex() or 'empty'}" for a, d, _ in ACCEPTED],
)
def test_accepted_forms_are_the_hash_in_each_accepted_text_form(
    algorithm: HashAlgorithm, data: bytes, expected: set[str]
) -> None:
    """accepted_forms gives lower-case hex for md5/sha1 and unsigned, signed and 8-hex-digit crc32."""
    assert set(accepted_forms(algorithm, data)) == expected


def test_crc32_forms_cover_a_negative_and_a_zero_padded_value() -> None:
    """The crc32 table above holds a value above 2**31 and one with a leading hex zero (hand-checked)."""
    assert _crc_forms(b"test") == {"3632233996", "-662733300", "d87f7e0c"}
    assert _crc_forms(b"33") == {"174200537", "0a6216d9"}
    assert set(accepted_forms(HashAlgorithm.CRC32, b"")) == {"0", "00000000"}


CAPTURED_SMS = {"phone": "79998887766", "mes": "Привет, мир!", "to": "79001234567"}
CAPTURED_STATUS = {"id": "1001", "phone": "79998887766", "status": "1"}
CAPTURED_SMS_WITH_COLON = {"phone": "79998887766", "mes": "код:42", "to": "79001234567"}
# A captured request re-used as another kind (or re-split): its values joined by ':' make the same
# control string, so its hash verifies. Refused by decode (400) or, where every phone-like field is
# plausible, by normalize (dead letter): never stored. Rows: original, forged kind and fields, refused by.
FORGERIES = [
    pytest.param(
        ("incoming", CAPTURED_SMS),
        ("status", {"id": "79998887766", "phone": "Привет, мир!", "status": "79001234567"}),
        "decode",
        id="sms-as-status",
    ),
    pytest.param(
        ("status", CAPTURED_STATUS),
        ("incoming", {"id": "1", "phone": "1001", "mes": "79998887766", "to": "1"}),
        "decode",
        id="status-as-sms",
    ),
    pytest.param(
        ("incoming", CAPTURED_SMS),
        ("call", {"waitcall": "1", "phone": "79998887766:Привет, мир!", "ts": "79001234567"}),
        "decode",
        id="sms-as-call-colon-in-phone",
    ),
    pytest.param(
        ("incoming", CAPTURED_SMS),
        ("call", {"waitcall": "1", "phone": "79998887766", "ts": "Привет, мир!:79001234567"}),
        "normalize",
        id="sms-as-call-colon-in-ts",
    ),
    pytest.param(
        ("status", CAPTURED_STATUS),
        ("call", {"waitcall": "1", "phone": "1001:79998887766", "ts": "1"}),
        "decode",
        id="status-as-call-colon-in-phone",
    ),
    pytest.param(
        ("status", CAPTURED_STATUS),
        ("call", {"waitcall": "1", "phone": "1001", "ts": "79998887766:1"}),
        "normalize",
        id="status-as-call-colon-in-ts",
    ),
    pytest.param(
        ("incoming", CAPTURED_SMS_WITH_COLON),
        ("incoming", {"id": "2", "phone": "79998887766:код", "mes": "42", "to": "79001234567"}),
        "decode",
        id="sms-re-split-into-phone",
    ),
    pytest.param(
        ("incoming", CAPTURED_SMS_WITH_COLON),
        ("incoming", {"id": "2", "phone": "79998887766", "mes": "код", "to": "42:79001234567"}),
        "decode",
        id="sms-re-split-into-to",
    ),
]


@pytest.mark.parametrize(("original", "forged", "refused_by"), FORGERIES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_captured_hash_reused_as_another_kind_is_never_stored(
    fmt: str,
    original: tuple[str, dict[str, str]],
    forged: tuple[str, dict[str, str]],
    refused_by: str,
) -> None:
    """A signed request's hash put on another kind's fields (same control string) is refused by decode,
    or, where its phones are plausible, by normalize: it never becomes an event."""
    (kind, params), (forged_kind, forged_params) = original, forged
    captured = sign(kind, params, "md5")
    assert sign(forged_kind, forged_params, "md5") == captured
    req = build(forged_kind, fmt, "utf-8", algorithm=None, params={**forged_params, "md5": captured})
    if refused_by == "decode":
        with pytest.raises(BadRequest, match="implausible"):
            decoded(req)
    else:
        forged_event = decoded(req)
        assert forged_event.kind == forged_kind
        verify(forged_event, HashAlgorithm.MD5, SECRET)
        with pytest.raises(PermanentError, match="ts"):
            normalize(forged_event, ZoneInfo("Europe/Moscow"), datetime(2025, 1, 1, tzinfo=UTC))
