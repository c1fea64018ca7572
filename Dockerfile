FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# The CPU build of torch first, so the rest never pulls a CUDA build.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY hub hub
COPY server server
COPY clients clients
COPY trainers trainers
RUN pip install ".[router]"
VOLUME /data
EXPOSE 50051
# Listening beyond loopback requires tokens: mount a file and point DELTAHUB_TOKENS_FILE at it.
CMD ["deltahub", "serve", "--data-dir", "/data", "--address", "0.0.0.0:50051"]
