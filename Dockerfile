# The bot (and backorder-admin) in a container: python:3.11-slim, a non-root user, the
# PostgreSQL driver installed. The schema is migrated on start (every bot process brings it up
# to date; compose.yaml runs `backorder-admin init` once before several processes start).
# /healthz on API_PORT is the container's health check.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin bot \
    && mkdir -p /data \
    && chown bot:bot /data

WORKDIR /app
COPY pyproject.toml README.md run_bot.py ./
COPY store ./store
COPY bot ./bot
COPY sandbox ./sandbox
COPY shopapi ./shopapi
RUN pip install ".[postgresql]"

USER bot
WORKDIR /data
# SQLite in the volume by default; set DATABASE_URL=postgresql+asyncpg://... for PostgreSQL.
ENV DATABASE_URL=sqlite+aiosqlite:////data/backorder.sqlite3 \
    API_LISTEN=0.0.0.0 \
    API_PORT=8081 \
    LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8081

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('API_PORT', '8081'), timeout=4)"]

CMD ["backorder-bot"]
