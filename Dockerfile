# syntax=docker/dockerfile:1
# One image for the cloud and the agent: `docker run IMAGE cloud` (the default) or `docker run IMAGE agent`.
# Build: docker build -t tiangong:0.1.0 .

ARG PYTHON_VERSION=3.11
# The uv that wrote uv.lock; the lock is installed as it is (--frozen), never resolved anew.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- build: the locked dependencies and the project into /app/.venv --------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    uv sync --frozen --no-dev --no-install-project
COPY pyproject.toml uv.lock README.md ./
COPY wire ./wire
COPY cloud ./cloud
COPY agent ./agent
COPY executors ./executors
COPY files ./files
COPY cli ./cli
# --no-editable: the project is installed into the venv, so the runtime stage needs only /app/.venv.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---- runtime: slim Python, the venv, a non-root user ---------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
RUN groupadd --system --gid 10001 tiangong \
    && useradd --system --uid 10001 --gid tiangong --home-dir /data --no-create-home --shell /usr/sbin/nologin tiangong \
    && mkdir -p /data \
    && chown tiangong:tiangong /data
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TIANGONG_HOST=0.0.0.0 \
    TIANGONG_PORT=8080 \
    TIANGONG_DATA_DIR=/data
WORKDIR /data
VOLUME /data
EXPOSE 8080
USER 10001:10001
# Docker only (Kubernetes ignores it and uses the probes in deploy/). The agent serves no port, so
# the check passes for it; for the cloud (and `up`) it asks /healthz on TIANGONG_PORT. It does not read a
# `--port` flag: to listen elsewhere set the variable (`docker run -e TIANGONG_PORT=9000 IMAGE cloud`,
# which the cloud reads too); `up` reads only its flag, so give it both.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; args = open('/proc/1/cmdline', 'rb').read().split(b'\\0'); sys.exit(0) if not {b'cloud', b'up'} & set(args) else urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TIANGONG_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["tiangong"]
CMD ["cloud"]
