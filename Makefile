# Two entry points (see README): `make demo` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# MONAI Label runs in an environment of its own (its pins conflict with the bundle's): see README, MONAI Label
ML_VENV := .venv-monailabel
ML_STAMP := $(ML_VENV)/.installed

.PHONY: demo test lint stats setup setup-monailabel monailabel clean

setup: $(STAMP)

setup-monailabel: $(ML_STAMP)

$(ML_STAMP): bundle/monailabel/requirements.txt scripts/setup_monailabel.sh
	PYTHON=$(PYTHON) bash scripts/setup_monailabel.sh $(ML_VENV)

# serve this bundle to 3D Slicer / OHIF: make monailabel STUDIES=/path/to/images [PORT=8000]
monailabel: $(ML_STAMP)
	bash scripts/start_monailabel.sh --studies "$(STUDIES)" --port $(or $(PORT),8000)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scripts.demo

stats: $(STAMP)
	$(PY) -m scripts.model_stats

# the two environments build at the same time (each pip install keeps one core busy)
test:
	$(MAKE) -j2 setup setup-monailabel
	$(PY) -m ruff check bundle scripts tests
	$(PY) -m pytest -q --durations=20 tests

clean:
	rm -rf $(VENV) $(ML_VENV) .pytest_cache .ruff_cache
