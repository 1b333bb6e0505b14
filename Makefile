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

# The server on port 20555 with the example flows loaded, state in ./routilux.db (SQLite).
run: install
	ROUTILUX_FLOWS_DIR=examples/flows ROUTILUX_API_RELOAD=false $(PY) -m routilux.api.main

test: install
	$(PY) -m pytest -m "not slow" -q

# Full-size measurements; each prints its figures next to a baseline measured in the same run.
bench: install
	$(PY) bench/engine.py
	$(PY) bench/debug_overhead.py
	$(PY) bench/api.py
	$(PY) bench/ws.py
	$(PY) bench/cluster.py
	$(PY) -m pytest -m slow -q

clean:
	rm -rf $(VENV) build dist .pytest_cache
