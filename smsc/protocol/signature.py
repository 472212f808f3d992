"""The hash that signs each callback: `<fields joined by ':'>:<secret>`, md5/sha1 hex or crc32."""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Mapping, Sequence

from smsc.exceptions import InvalidSignature
from smsc.protocol.decode import Decoded
from smsc.protocol.fields import CONTROL_FIELDS, FALLBACK_HASH_CODECS, HashAlgorithm, Kind


def control_string(kind: Kind, params: Mapping[str, str], secret: str) -> str:
    """The string the gateway hashes; a missing field counts as empty, as in PHP handlers."""
    values = [params.get(name, "") for name in CONTROL_FIELDS[kind]]
    return ":".join([*values, secret])


def accepted_forms(algorithm: HashAlgorithm, data: bytes) -> list[str]:
    """Every text form of the hash of `data` we accept, lower-case.

    crc32 comes as PHP prints it (unsigned decimal), as a signed 32-bit decimal, or as 8 hex digits.
    """
    # md5 and sha1 are the vendor's choice, not ours; crc32 is no signature at all (see README).
    if algorithm is HashAlgorithm.MD5:
        return [hashlib.md5(data).hexdigest()]  # noqa: S324
    if algorithm is HashAlgorithm.SHA1:
        return [hashlib.sha1(data).hexdigest()]  # noqa: S324
    unsigned = zlib.crc32(data)
    signed = unsigned - (1 << 32) if unsigned >= 1 << 31 else unsigned
    return [str(unsigned), str(signed), f"{unsigned:08x}"]


def sign(kind: Kind, params: Mapping[str, str], algorithm: HashAlgorithm, secret: str, codec: str) -> str:
    """The hash the gateway sends for an event, its control string encoded with `codec`.

    In the first form verify accepts: lower-case hex, crc32 as an unsigned decimal (as PHP prints it).
    """
    return accepted_forms(algorithm, control_string(kind, params, secret).encode(codec))[0]


def verify(decoded: Decoded, algorithm: HashAlgorithm, secret: str) -> None:
    """Raise InvalidSignature unless the request carries a valid hash of the configured algorithm.

    The control string is hashed in the transmission charset; the vendor does not document the
    bytes, so a non-ASCII string that does not match is also tried in utf-8 and windows-1251.
    """
    received = decoded.params.get(algorithm.value)
    if received is None:
        others = [a.value for a in HashAlgorithm if a is not algorithm and a.value in decoded.params]
        if others:
            raise InvalidSignature(f"hash algorithm {others[0]} is not the configured one")
        raise InvalidSignature("no hash parameter")
    # surrogatepass: a JSON "\ud800" escape is no hash, but must be refused, not crash.
    candidate = received.strip().lower().encode("utf-8", "surrogatepass")
    if hmac.compare_digest(candidate, secret.lower().encode("utf-8")):
        raise InvalidSignature("the secret itself was sent in place of a hash")
    text = control_string(decoded.kind, decoded.params, secret)
    codecs = [decoded.charset]
    if not text.isascii():
        codecs += [c for c in FALLBACK_HASH_CODECS if c != decoded.charset]
    matched = False
    for codec in codecs:
        try:
            data = text.encode(codec)
        except UnicodeEncodeError:
            continue
        for form in accepted_forms(algorithm, data):
            # No early exit: every candidate is compared, in constant time.
            matched |= hmac.compare_digest(candidate, form.encode("ascii"))
    if not matched:
        raise InvalidSignature(f"{algorithm.value} hash does not match")


def verify_any(decoded: Decoded, algorithm: HashAlgorithm, secrets: Sequence[str]) -> int:
    """Raise InvalidSignature unless the request's hash matches one of `secrets` (two during a
    rotation); return the position of the one that did, for the log: it tells when the old one
    is no longer used.

    Every secret is checked, also after a match: the time taken does not tell which one matched.
    """
    if not secrets:
        raise ValueError("verify_any needs at least one secret")
    matched: list[int] = []
    refusals: list[InvalidSignature] = []
    for position, secret in enumerate(secrets):
        try:
            verify(decoded, algorithm, secret)
            matched.append(position)
        except InvalidSignature as e:
            refusals.append(e)
    if not matched:
        raise refusals[0]
    return matched[0]
