# clfops: the two README commands are `make demo` and `make test`; each builds .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 CPU comes from a local wheel directory where the machine has one (no CUDA download).
PIP_FLAGS := -c constraints.txt $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
STAMP := $(VENV)/.installed

.PHONY: install bytecode data demo test test-fast test-deps lint bench constraints clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Every extra but stream, so the suite tests everything (pyproject.toml: server, tensorboard, onnx, dev).
	$(PY) -m pip install -q $(PIP_FLAGS) -e '.[server,tensorboard,onnx,dev]'
	# The stream extra (data=stream): litdata without its declared deps. It requires torchvision (only for
	# image/video decoders we never call), and PyPI's torchvision is a CUDA build whose import fails next to CPU
	# torch. Its other deps (boto3, requests, filelock, lightning-utilities, numpy) are installed above; obstore
	# downloads S3 chunks.
	$(PY) -m pip install -q $(PIP_FLAGS) --no-deps litdata obstore
	@touch $(STAMP)

install: $(STAMP)

# pip compiles what it installs, but not an editable project: without .pyc files every `clfops` command compiles
# clfops' ~100 modules again (~0.35 s a command; and PYTHONDONTWRITEBYTECODE, where set, keeps it that way).
bytecode: $(STAMP)
	@$(PY) -m compileall -q src

# Fashion-MNIST: Debian's dataset-fashion-mnist when we are root with apt, else the official download.
data: $(STAMP)
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "apt-get could not install dataset-fashion-mnist; downloading instead"; fi
	$(VENV)/bin/clfops fetch fashion_mnist

demo: data bytecode
	$(VENV)/bin/clfops train

# Chromium renders the evaluation report in its test (Debian's package, when we can install it).
test-deps:  # Debian packages the suite drives: chromium (report/UI screenshots), tmux (the training bar on a terminal)
	@if ! (command -v chromium && command -v tmux) >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium tmux) \
	  || echo "could not install chromium and tmux"; fi

# One pytest-xdist worker per core, each pinned to its core (tests/conftest.py), a test file per worker (its
# module-scoped trained runs are made once). The suite waits a lot on subprocesses, servers and databases, so
# two workers keep 2 cores busier than one. `pytest tests/test_x.py` alone still runs in one process.
XDIST := -n auto --dist loadfile
test: data test-deps bytecode
	$(VENV)/bin/pytest -q $(XDIST)

# The tier without services, browser, several processes or training runs (`--fast`: tests/conftest.py's HEAVY
# markers, listed in pyproject.toml): the check to run while editing. `make test` still runs everything.
test-fast: data bytecode
	$(VENV)/bin/pytest -q $(XDIST) --fast

# ruff, then the layering contracts in pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports

bench: data
	$(PY) benchmarks/train_throughput.py

constraints: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^clfops' | sed 's/+cpu//' > constraints.body
	{ head -2 constraints.txt; cat constraints.body; } > constraints.new && rm constraints.body && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
