"""The aiohttp ingress: verify, store the raw request durably in Redis, answer at once."""
