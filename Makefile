# Entry points. `make demo` and `make test` create or refresh .venv from the pinned files first.
PYTHON ?= $(shell command -v python3.11 || command -v python3 || echo python3.11)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast bench bench-quick clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v[:2] == (3, 11) else f"error: Python 3.11 is required, {sys.executable} is {v[0]}.{v[1]} (TensorFlow 2.15.1 supports 3.9-3.11; tf.estimator needs 2.15). Install 3.11 and run: make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)")' \
		|| { echo "error: could not run '$(PYTHON)'. Install Python 3.11, or pass its path: make PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@touch $(STAMP)

demo: venv
	$(PY) demo.py

test: venv
	$(PY) -m pytest -q tests

test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

bench: venv
	$(PY) -m benchmarks.run

bench-quick: venv
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf out
