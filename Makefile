# Two entry points (see README): `make demo` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint stats setup clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scripts.demo

stats: $(STAMP)
	$(PY) -m scripts.model_stats

test: $(STAMP)
	$(PY) -m ruff check bundle scripts tests
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
