"""Names and tunables shared by the ingress and the workers."""

import re
from typing import Final

# Where Redis and PostgreSQL are when REDIS_URL and DATABASE_URL are not set.
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:5432/smsc"

# The RQ job the ingress enqueues; the worker imports it by this path.
JOB_FUNCTION: Final = "workers.jobs.process"

# Results are in PostgreSQL, so RQ's copy only needs to live briefly. Not 0: with 0 RQ 3.0 deletes
# the job at once, walking its executions, and fails a job retried after its worker was killed
# ("Execution ... not found in Redis") although its rows were committed.
JOB_RESULT_TTL_SECONDS: Final = 60

# Redis calls of the ingress: the gateway must never wait long on us.
REDIS_SOCKET_TIMEOUT_SECONDS: Final = 2.0
REDIS_CONNECT_TIMEOUT_SECONDS: Final = 1.0
# How long a write waits for SMSC_REDIS_MIN_REPLICAS replicas (WAIT's timeout): within the socket
# timeout, and long enough for a replica on the same network to acknowledge under load.
REDIS_WAIT_TIMEOUT_MS: Final = 1000

# Text put in place of hash parameters of the raw query string before it is stored:
# the handler URL carries the secret itself there.
REDACTED: Final = "redacted"

# The account of POST /smsc, configured by the environment; others are named by POST /smsc/{account}.
DEFAULT_ACCOUNT: Final = "default"
# The `{account}` of `/smsc/{account}`: it goes into URLs, log lines, metrics labels and every table.
ACCOUNT_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The metrics label of whatever account a deployment does not know: label values must stay few.
UNKNOWN_ACCOUNT: Final = "unknown"
