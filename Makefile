# The two commands of cdc_jax: `make demo` runs the main job on the embedded
# benchmark, `make test` runs the test suite. Both create .venv with pinned
# versions on first use and reuse it while the requirement files are unchanged.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REQS := requirements/base.txt requirements/nodeps.txt requirements/test.txt setup.py
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0
export PYTHONUNBUFFERED := 1

.PHONY: demo test venv clean-venv

venv: $(STAMP)

$(STAMP): $(REQS)
	@echo "== creating $(VENV) with pinned versions (first run takes a few minutes)"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/base.txt -r requirements/test.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements/nodeps.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m cdc_jax.demo

test: $(STAMP)
	$(BIN)/python -m pytest tests -n 2 -q --durations=15

clean-venv:
	rm -rf $(VENV)
