# The README's two commands: `make test` and `make run`. Both build .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ferkit-installed
FERKIT_DATA ?= ../shared/datasets/ferplus

.PHONY: test test-fast run venv lint

venv: $(STAMP)

# Re-installs only when pyproject.toml changes (or the venv is missing): a second run is a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[eval,torch,video,app,serve,scale,train,test,faces-dlib]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The everyday loop: everything but the slow reproductions on real data, the browser, Ray, DDP, the
# notebook, the bench scripts' start-up and the wheel (all of which `make test` and CI run).
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not (realdata or browser or ray or ddp or notebook or bench or wheel)"

run: $(STAMP)
	$(BIN)/ferkit app --address 127.0.0.1 --port 8501
