# purchase-stream runtime image: `docker run IMAGE worker|pos|topics|...` (entrypoint is the CLI).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies and code. (Only what the package needs: tests, docs, benchmarks stay out.)
COPY pyproject.toml ./
COPY stream ./stream
COPY topologies ./topologies
RUN pip install . && rm -rf build ./*.egg-info

# Data files the installed package reads from outside site-packages.
COPY config ./config
COPY avro ./avro
ENV PURCHASE_STREAM_CONFIG_DIR=/app/config \
    PURCHASE_STREAM_AVRO_DIR=/app/avro \
    PURCHASE_STREAM_STATE_DIR=/var/lib/purchase-stream/state

# Unprivileged user; the state directory exists (owned by it) so that a named volume
# mounted on /var/lib/purchase-stream inherits the ownership.
RUN useradd --system --uid 10001 --home-dir /var/lib/purchase-stream --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/purchase-stream/state \
    && chown -R app:app /var/lib/purchase-stream
USER app

EXPOSE 6066
ENTRYPOINT ["purchase-stream"]
CMD ["--help"]
