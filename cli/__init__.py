"""The `smsc-ingest` console command: it wires the ingress and the workers, so it sits above both."""
