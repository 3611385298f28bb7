# One image for every tokenkeeper process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY config ./config
COPY workers ./workers
COPY callback_app ./callback_app
# Extras to install, e.g. `docker compose build --build-arg TOKENKEEPER_EXTRAS=otel` for traces.
ARG TOKENKEEPER_EXTRAS=""
# constraints.txt: the dependency versions the tests passed on (scripts/lock.py writes it).
RUN pip install --no-cache-dir -c constraints.txt -e ".${TOKENKEEPER_EXTRAS:+[$TOKENKEEPER_EXTRAS]}" && useradd --system --home /data tokenkeeper && mkdir -p /data \
    && chown tokenkeeper /data
USER tokenkeeper
ENV TOKENKEEPER_DATA_DIR=/data
