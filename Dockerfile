# syntax=docker/dockerfile:1
# canary-controller image: `canaryctl run` by default, as a non-root user, on a
# read-only root filesystem. Build: docker build -t canary-controller:0.1.0 .
#
# Dependencies come from requirements/main.lock, pinned with hashes and
# installed with --require-hashes. The project keeps no uv.lock, because it
# records download addresses; main.lock is its lock file for the runtime
# dependencies.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the runtime dependencies and the project in /opt/venv -----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# The lock files first, so that a change to the code reuses the dependency layers.
COPY requirements/main.lock requirements/dev.lock requirements/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements/main.lock

# The project's wheel is built by hatchling, which is pinned with hashes in
# dev.lock; the build tools live in a venv of their own that the image never ships.
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps -r requirements/dev.lock
COPY pyproject.toml README.md ./
COPY controller controller
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps --no-index /wheels/*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/pip uninstall --yes pip

# --- runtime: the interpreter, /opt/venv, and nothing to build with --------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="canary-controller" \
      org.opencontainers.image.description="Step-by-step, self-judging rollouts of ML / LLM models" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /opt/venv /opt/venv

# A numeric, non-root user, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 canary \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin canary \
 && install --directory --owner 10001 --group 10001 --mode 0750 /var/lib/canary

# Bytecode is compiled at build time; nothing writes under / at run time. The
# only writable paths are these volumes: /tmp, and /var/lib/canary, the working
# directory, where the embedded SQLite store's default `sqlite:///canary.db`
# lands (unused with Postgres). No CANARY_DATABASE_URL here: a variable would
# override the URL mounted from a Secret into the secrets directory.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
VOLUME ["/tmp", "/var/lib/canary"]
WORKDIR /var/lib/canary

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["canaryctl"]
CMD ["run"]
