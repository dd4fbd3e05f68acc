# canary-controller image. Completed by the packaging issue (health endpoints,
# chart wiring); this builds and runs `canaryctl` from the pinned lock file.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/main.lock requirements/main.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements/main.lock
COPY pyproject.toml README.md ./
COPY controller controller
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11-slim
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --no-create-home canary
USER 10001
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /var/lib/canary
ENTRYPOINT ["canaryctl"]
CMD ["--help"]
