# The two commands the README opens with: `make run` (the service, shipped models) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= train,triton-local,loadtest,dev

.PHONY: install run test lint system-deps

# torch==2.13.0 first: pip then takes the local CPU wheel instead of the CUDA build from the index.
$(BIN)/ganserve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/ganserve

run: install
	$(BIN)/ganserve serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The Debian packages the tests use (tests/system-packages.txt), installed when missing. A script,
# not make recipes: it reads one list, and finds root or sudo, with a clear message when neither is there.
system-deps:
	bash tests/system_deps.sh

test: system-deps lint
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; \
	exit $$rc
