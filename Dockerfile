# One image for every process of the production topology; the command picks the process:
#   bps migrate | bps api | bps worker --queues cpu | bps worker --queues gpu
# Build the GPU worker image with: --build-arg EXTRAS=gpu (on an NVIDIA CUDA 12 host).
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    NUMBA_CACHE_DIR=/app/var/numba-cache

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY bps ./bps
COPY service ./service
COPY worker ./worker
COPY alembic.ini ./
COPY migrations ./migrations
RUN pip install --upgrade pip \
 && if [ -n "$EXTRAS" ]; then pip install -e ".[$EXTRAS]"; else pip install -e .; fi \
 && useradd --create-home --uid 10001 bps \
 && mkdir -p /app/var && chown bps /app/var
USER bps

EXPOSE 8000
CMD ["bps", "api"]
