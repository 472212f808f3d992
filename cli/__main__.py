"""`python -m cli ...`: the same as `smsc-ingest ...` (how `dev` starts the worker and the ingress)."""

import sys

from cli.main import main

sys.exit(main())
