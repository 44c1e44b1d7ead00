# `make demo` runs the quickstart, `make test` the test suite, `make bench` the
# benchmark table, `make examples-table` every example (rewriting the README's examples
# table), `make lint` ruff, `make wheel` the packaging check. Each sets up
# .venv itself on a fresh machine: the pinned CPU torch first (so that pip does
# not pull the CUDA build), then this package with its test extra.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: demo test bench bench-gpu examples-table lint wheel clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/quickstart.py

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

# the language-model rows on a CUDA GPU in bf16 (with the python that has CUDA torch)
bench-gpu:
	PYTHONPATH=. $(PYTHON) benchmarks/gpu.py

# every example with its defaults, its RESULT line into the README's table (several minutes)
examples-table: $(VENV)/.installed
	$(PY) benchmarks/examples_table.py

lint: $(VENV)/.installed
	$(PY) -m ruff check .

wheel: $(VENV)/.installed
	PY=$(PY) TORCH_VERSION=$(TORCH_VERSION) bash .ci/check_wheel

clean:
	rm -rf $(VENV)
