# One image for every process of the production topology; the command picks the process:
#   bps migrate | bps api | bps worker --queues cpu | bps worker --queues gpu
# Build the GPU worker image with: --build-arg EXTRAS=gpu (on an NVIDIA CUDA 12 host).
# Behind a TLS-intercepting proxy or with a private index whose CA the build must trust:
#   --build-arg CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)"   (PEM text; public, not a secret)
# Without Docker Hub: --build-arg BASE_IMAGE=<any Debian-like image with python3.11+, pip and venv on PATH>.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG EXTRAS=""
ARG CA_CERTS=""
ARG PIP_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    NUMBA_CACHE_DIR=/app/var/numba-cache

# The extra CAs join the system bundle, which pip is told to use (it ships its own otherwise).
RUN if [ -n "$CA_CERTS" ]; then \
        printf '%s\n' "$CA_CERTS" >> /etc/ssl/certs/ca-certificates.crt \
     && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf; \
    fi

WORKDIR /app
# The dependencies first, from pyproject.toml alone (empty packages stand in for the code), so
# that this layer is rebuilt only when pyproject.toml changes, not with every source change.
COPY pyproject.toml ./
RUN if [ -z "$PIP_INDEX_URL" ]; then unset PIP_INDEX_URL; fi \
 && mkdir -p bps service worker && touch README.md bps/__init__.py service/__init__.py worker/__init__.py \
 && pip install -q --upgrade pip \
 && pip install -q ".${EXTRAS:+[$EXTRAS]}" \
 && rm -rf bps service worker README.md build *.egg-info \
 && useradd --create-home --uid 10001 bps
COPY README.md* ./
COPY bps ./bps
COPY service ./service
COPY worker ./worker
COPY alembic.ini ./
COPY migrations ./migrations
# The CPU kernels are compiled here, once, into Numba's disk cache under var/ (a worker then
# loads them at start in about a second instead of compiling them for a minute on 2 cores).
RUN pip install -q --no-deps -e . && mkdir -p /app/var \
 && python -c "from worker.engine import cpu_kernels; cpu_kernels.warm_up()" \
 && chown -R bps /app/var
USER bps

EXPOSE 8000
CMD ["bps", "api"]
