# One image for the four services and for the one-shot topic provisioning job.
# docker-compose.yml picks the process with `command:` (e.g. ["python", "-m", "registry"],
# ["carbon", "topics", "--create", "--bootstrap", "kafka:9092"]): there is no default CMD.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

# The same uv as the dev group pins (uv.lock), so `--frozen` reads the lock it wrote.
RUN pip install "uv==0.13.9"

# Unprivileged runtime user; created before the copies so the layers below stay cacheable.
RUN groupadd --system --gid 10001 carbon \
    && useradd --system --uid 10001 --gid carbon --home-dir /home/carbon --create-home \
        --shell /usr/sbin/nologin carbon

WORKDIR /app

# 1. Third-party dependencies only: this layer is reused until uv.lock or a manifest changes.
COPY pyproject.toml uv.lock ./
COPY contracts/pyproject.toml contracts/pyproject.toml
COPY services/platform/pyproject.toml services/platform/pyproject.toml
COPY services/emissions/pyproject.toml services/emissions/pyproject.toml
COPY services/reporting/pyproject.toml services/reporting/pyproject.toml
COPY services/verification/pyproject.toml services/verification/pyproject.toml
COPY services/registry/pyproject.toml services/registry/pyproject.toml
COPY services/notifier/pyproject.toml services/notifier/pyproject.toml
RUN uv sync --frozen --no-dev --no-install-workspace

# 2. The repository, then the workspace members. They stay editable installs on purpose: the
#    code finds contracts/ (topics.yaml, schemas, policies) and each service's migrations/
#    beside itself in /app, exactly as in a development checkout.
COPY . .
RUN uv sync --frozen --no-dev \
    && mkdir -p /app/var \
    && chown carbon:carbon /app /app/var

# The venv first on PATH: `python -m <service>` and the `carbon` console script need no uv.
ENV VIRTUAL_ENV=/app/.venv \
    PATH="/app/.venv/bin:${PATH}" \
    CARBON_HTTP_HOST=0.0.0.0 \
    CARBON_LOG_FORMAT=json

USER carbon

# reporting, verification, registry, notifier (CARBON_HTTP_PORT overrides).
EXPOSE 8001 8002 8003 8004
