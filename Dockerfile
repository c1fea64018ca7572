# The deltahub server image: `deltahub serve` on /data, port 50051.
#   docker build -t deltahub .
#   docker run -p 50051:50051 -v deltahub-data:/data -v ./tls:/tls:ro -e DELTAHUB_TOKENS="$(cat tokens.yaml)" \
#       -e DELTAHUB_SERVER_TLS_CERT=/tls/hub.pem -e DELTAHUB_SERVER_TLS_KEY=/tls/hub-key.pem \
#       -e DELTAHUB_TLS_CA=/tls/ca.pem -e DELTAHUB_TLS_SERVER_NAME=<the certificate's name> deltahub
# Listening beyond loopback requires tokens (DELTAHUB_TOKENS, the file's text, or DELTAHUB_TOKENS_FILE) and
# TLS (or DELTAHUB_INSECURE=1 behind a proxy that terminates it); the DELTAHUB_TLS_* variables let the
# health check dial 127.0.0.1. BASE_IMAGE and TORCH_INDEX_URL let a build use a mirror.
# Several replicas share a PostgreSQL catalog and an S3 store: DELTAHUB_CATALOG=postgresql://...,
# DELTAHUB_BLOB_STORE=s3://bucket/prefix, AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
# (or AWS_PROFILE); /data then holds only this replica's scratch and cache (README: "Running more than one").
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /app
# The CPU build of torch first, so the project's own requirement never pulls a CUDA build.
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md ./
COPY hub hub
COPY server server
COPY clients clients
COPY trainers trainers
RUN pip install ".[router]" && deltahub --version
RUN useradd --system --uid 10001 --home-dir /data deltahub && mkdir -p /data && chown deltahub /data
USER deltahub
VOLUME /data
EXPOSE 50051
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD ["deltahub", "health", "--hub", "127.0.0.1:50051"]
CMD ["deltahub", "serve", "--data-dir", "/data", "--address", "0.0.0.0:50051"]
