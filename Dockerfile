# syntax=docker/dockerfile:1
# xds-operator image: `xds-operator serve` (files) or `xds-operator run` (Kubernetes operator).
#
#   docker build -t xds-operator:dev .
#
# Two stages on the same Python base (the venv's interpreter link points at the base's Python):
# the builder installs the locked runtime dependencies and the package itself, non-editable, into
# /app/.venv without the dev group (no Envoy, httpbin, kmock or pytest); the runtime stage copies
# only that venv. The image writes nothing at run time, so it runs with a read-only root filesystem.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first (their layer survives source edits), then the package.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project --no-editable
COPY README.md ./
COPY operator/ ./operator/
RUN uv sync --locked --no-dev --no-editable \
    && /app/.venv/bin/xds-operator --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="xds-operator" \
      org.opencontainers.image.description="Envoy xDS control plane and Kubernetes operator"
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
# A numeric, unprivileged user (Kubernetes' runAsNonRoot can only verify numeric UIDs).
USER 10001:10001
# 18000: ADS (gRPC); 18001: /healthz, /readyz, /proxies, /status, /metrics.
EXPOSE 18000 18001
ENTRYPOINT ["xds-operator"]
CMD ["serve", "--config", "/config"]
