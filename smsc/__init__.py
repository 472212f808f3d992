"""smsc-ingest: durable receiver for SMSC.ru handler callbacks."""
