"""RQ workers: decode raw requests, normalize, deduplicate and store them in PostgreSQL."""
