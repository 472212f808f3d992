"""Everything the SMSC handler protocol says, in one place both the ingress and the workers use."""

from smsc.protocol.decode import Decoded, decode
from smsc.protocol.fields import Format, HashAlgorithm, Kind
from smsc.protocol.raw import RawRequest
from smsc.protocol.signature import verify

__all__ = [
    "Decoded",
    "Format",
    "HashAlgorithm",
    "Kind",
    "RawRequest",
    "decode",
    "verify",
]
