"""Names and tunables shared by the ingress and the workers."""

from typing import Final

# The RQ job the ingress enqueues; the worker imports it by this path.
JOB_FUNCTION: Final = "workers.jobs.process"

# A job runs one transaction of a handful of rows: a minute means something is stuck.
JOB_TIMEOUT_SECONDS: Final = 60
# Results are in PostgreSQL; keeping RQ's copy would only fill Redis.
JOB_RESULT_TTL_SECONDS: Final = 0
# Failed jobs keep their raw payload in RQ's failed registry this long, for replay.
JOB_FAILURE_TTL_SECONDS: Final = 30 * 24 * 3600

# Redis calls of the ingress: the gateway must never wait long on us.
REDIS_SOCKET_TIMEOUT_SECONDS: Final = 2.0
REDIS_CONNECT_TIMEOUT_SECONDS: Final = 1.0

# Text put in place of hash parameters of the raw query string before it is stored:
# the handler URL carries the secret itself there.
REDACTED: Final = "redacted"
