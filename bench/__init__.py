"""`make bench`: throughput and latency of smsc-ingest against simple references, on this machine.

The product is measured only through its public commands (`smsc-ingest serve|worker|migrate`), its
environment variables, and `smsc.queue.build_job/stage_job` for pre-filling a queue.
"""
