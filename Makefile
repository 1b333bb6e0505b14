# Two entry points matter: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[api,dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m routilux.demo examples/etl.yaml

test: install
	$(PY) -m pytest -m "not slow" -q

bench: install
	$(PY) bench/engine.py
	$(PY) -m pytest -m slow -q

clean:
	rm -rf $(VENV) build dist .pytest_cache
