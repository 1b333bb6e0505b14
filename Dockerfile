# The Routilux API server for production: gunicorn with ONE Routilux worker (one process per
# SQLite database; a second one would refuse to start), as a non-root user, its database on a
# volume. Put it behind nginx for TLS: see docker-compose.yml and deploy/nginx.conf.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY openapi ./openapi
COPY src ./src
# gunicorn is the process manager in production only, so it is not among the [api] extras.
RUN pip install ".[api]" "gunicorn>=23"

RUN useradd --create-home --uid 1000 --user-group routilux \
    && mkdir /data \
    && chown routilux:routilux /data
USER routilux

ENV ROUTILUX_API_RELOAD=false \
    ROUTILUX_API_HOST=0.0.0.0 \
    ROUTILUX_API_PORT=20555 \
    ROUTILUX_DB=/data/routilux.db
VOLUME ["/data"]
EXPOSE 20555

# /api/health/live needs no API key; python's urllib because the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:20555/api/health/live', timeout=3)"]

CMD ["gunicorn", "-w", "1", "-k", "routilux.api.worker.UvicornWorker", \
     "--bind", "0.0.0.0:20555", "--graceful-timeout", "30", "--worker-tmp-dir", "/dev/shm", \
     "--access-logfile", "-", "--error-logfile", "-", "routilux.api.main:app"]
