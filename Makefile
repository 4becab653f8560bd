.PHONY: demo test lint dev clean

VENV := .venv
PY := $(VENV)/bin/python
# Embedded state (store, lake, Dagster home); `make dev XCOIN_HOME=/path` or the environment's value.
XCOIN_HOME ?= .xcoin
HOME_DIR := $(abspath $(XCOIN_HOME))
DAGSTER_YAML := $(HOME_DIR)/dagster/dagster.yaml
DAGSTER_EXAMPLE := xcoin_pipelines/defs/live/dagster.example.yaml

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

## Set up and run the end-to-end demo on the embedded default (no servers, no env vars).
demo: $(VENV)/.installed $(DAGSTER_YAML)
	XCOIN_HOME=$(HOME_DIR) $(VENV)/bin/xcoin demo

## Set up and pass the tests exactly as CI does (real Postgres + Redis).
test:
	bash .ci/run

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

## Dagster UI (http://127.0.0.1:3000) on the embedded state of XCOIN_HOME.
dev: $(VENV)/.installed $(DAGSTER_YAML)
	XCOIN_HOME=$(HOME_DIR) DAGSTER_HOME=$(HOME_DIR)/dagster $(VENV)/bin/dagster dev -w workspace.yaml

# The instance config (run-queue lane limit, 1 s dequeue, run monitoring). Written once: an
# operator's edits are kept; delete the file to take a newer example.
$(DAGSTER_YAML):
	mkdir -p $(dir $@)
	cp $(DAGSTER_EXAMPLE) $@

clean:
	rm -rf .xcoin
