"""How many examples a property test tries: its default, times FUZZ_SCALE (`make fuzz` raises it)."""

import os


def examples(default: int) -> int:
    """`default` in `make test`; `default * FUZZ_SCALE` when that is set."""
    return default * int(os.environ.get("FUZZ_SCALE") or "1")
