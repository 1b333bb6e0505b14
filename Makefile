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
	$(PY) -m bench.engine
	$(PY) -m bench.debug_overhead
	$(PY) -m bench.api
	$(PY) -m bench.ws
	$(PY) -m bench.fanout
	$(PY) -m bench.cluster
	$(PY) -m bench.durability
	$(PY) -m bench.evaluations
	$(PY) -m bench.soak
	$(PY) -m pytest -m slow -q

clean:
	rm -rf $(VENV) build dist .pytest_cache
