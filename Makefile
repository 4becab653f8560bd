.PHONY: demo test lint dev clean

VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

## Set up and run the end-to-end demo on the embedded default (no servers, no env vars).
demo: $(VENV)/.installed
	$(VENV)/bin/xcoin demo

## Set up and pass the tests exactly as CI does (real Postgres + Redis).
test:
	bash .ci/run

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

## Dagster UI on the embedded state.
dev: $(VENV)/.installed
	DAGSTER_HOME=$(abspath .xcoin/dagster) $(VENV)/bin/dagster dev -w workspace.yaml

clean:
	rm -rf .xcoin
