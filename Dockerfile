# One image for every command of smsc-ingest: serve, worker, migrate, exporter, stats, replay, ...
# (ENTRYPOINT is the console command; the compose file picks the subcommand). See the README,
# "Running in production", and deploy/compose.yaml.

# The wheel is built apart, so that the image holds neither the sources nor the build tools.
FROM python:3.12-slim-bookworm AS build
WORKDIR /src
# What pyproject.toml needs to build the package: its metadata (README.md is the long description)
# and the four packages (workers/migrations/ included).
COPY pyproject.toml README.md ./
COPY smsc ./smsc
COPY ingress ./ingress
COPY workers ./workers
COPY cli ./cli
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim-bookworm
# Logs are JSON lines on stderr (no terminal); unbuffered, the commands' output on stdout (stats,
# replay) reaches the container's log at once too, even when the container is killed.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A fixed numeric id, so that USER is non-root to any runtime that checks (runAsNonRoot) without
# reading the image's /etc/passwd.
RUN groupadd --system --gid 10001 smsc \
    && useradd --system --uid 10001 --gid smsc --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin smsc
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
# 8080: the ingress (serve); 9110: the exporter; 9200: a worker's metrics (worker --metrics-port).
EXPOSE 8080 9110 9200
# No HEALTHCHECK here: the same image runs workers, which serve no /readyz. The compose file gives
# each service its own.
# SIGTERM is what lets the ingress finish the requests in flight and a worker finish its job.
STOPSIGNAL SIGTERM
ENTRYPOINT ["smsc-ingest"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
