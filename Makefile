# `make demo` runs the quickstart, `make test` the test suite, `make docs` builds the
# documentation site, `make bench` the benchmark table, `make lint` ruff, `make wheel`
# the packaging check. Each sets up .venv itself on a fresh machine: the pinned CPU
# torch first (so that pip does not pull the CUDA build), then this package with its
# test extra (`make docs` adds the docs extra).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: demo test docs bench bench-gpu lint wheel clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/quickstart.py

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2

# --strict: a broken reference or a docstring griffe cannot match to its signature fails
# the build. NO_MKDOCS_2_WARNING silences mkdocs-material's banner about its successor.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

# the language-model rows on a CUDA GPU in bf16 (with the python that has CUDA torch)
bench-gpu:
	PYTHONPATH=. $(PYTHON) benchmarks/gpu.py

lint: $(VENV)/.installed
	$(PY) -m ruff check .

wheel: $(VENV)/.installed
	PY=$(PY) TORCH_VERSION=$(TORCH_VERSION) bash .ci/check_wheel

clean:
	rm -rf $(VENV) site
