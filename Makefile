# One command starts the server (`make serve`), one installs and tests (`make test`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA_DIR ?= ./data
ADDRESS ?= 127.0.0.1:50051
PROTOS := $(wildcard proto/deltahub/v1/*.proto)

.PHONY: install serve test test-gpu proto proto-check bench docker docker-check clean

$(VENV)/.installed: pyproject.toml .ci/install-torch
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	PIP="$(PIP)" bash .ci/install-torch
	$(PIP) install -q -e ".[dev,router]"
	touch $@

install: $(VENV)/.installed

serve: install
	$(VENV)/bin/deltahub serve --data-dir $(DATA_DIR) --address $(ADDRESS)

test: install
	$(PY) -m pytest -q tests

test-gpu: install
	$(PY) -m pytest -q -m gpu tests

# Generated code lives beside the package it belongs to: proto/deltahub/v1/x.proto
# becomes hub/deltahub/v1/x_pb2.py, imported as deltahub.v1.x_pb2, unpatched.
proto: install
	$(PY) -m grpc_tools.protoc -Iproto --python_out=hub --pyi_out=hub --grpc_python_out=hub $(PROTOS)
	# every file with its comments, for reflection (grpcurl describe shows what each field means)
	$(PY) -m grpc_tools.protoc -Iproto --include_imports --include_source_info \
	  --descriptor_set_out=hub/deltahub/v1/descriptors.binpb $(PROTOS)

proto-check: proto
	git diff --exit-code -- hub/deltahub/v1 || (echo "generated code is stale: run make proto and commit" >&2; exit 1)

bench: install
	$(PY) bench/transfer.py

docker:
	docker build -t deltahub .

# Builds the image and checks it end to end from this machine's CLI (Linux, docker, host networking).
docker-check: install
	bash .ci/docker-check

clean:
	rm -rf $(VENV) .pytest_cache
