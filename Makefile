# `make demo` runs the quickstart, `make test` the test suite, `make docs` builds the
# documentation site, `make bench` the benchmark table (`make bench-gpu` the GPU one), `make examples-table` every
# example (rewriting the README's examples table), `make lint` ruff, `make wheel` the
# packaging check. Each sets up .venv itself on a fresh machine: the CPU build of torch
# first (so that pip does not pull the CUDA build; .ci/install_torch), with numpy (torch
# warns "Failed to initialize NumPy" at every import without it), then this package
# with only what the target needs (`demo`: the package and tqdm; `bench`: the package;
# `examples-table`: its examples extra; `test`: its test and docs extras (tests/test_docs.py
# builds the site and reads the API pages); `lint`, `wheel`: its test extra; `docs`:
# its docs extra).
#
#   make test TORCH_INDEX=                       # torch from your pip configuration only
#   make test VENV_ARGS=--system-site-packages   # reuse the torch of $(PYTHON)'s environment

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
VENV_ARGS ?=

.PHONY: demo test docs bench bench-gpu gpu-wheels examples-table lint wheel clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	TORCH_VERSION=$(TORCH_VERSION) TORCH_INDEX=$(TORCH_INDEX) bash .ci/install_torch $(PY)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

# the quickstart needs the package and tqdm (its progress bars), nothing else
$(VENV)/.installed-demo: $(VENV)/.installed
	$(PY) -m pip install --quiet tqdm
	touch $@

$(VENV)/.installed-examples: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[examples]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

demo: $(VENV)/.installed-demo
	$(PY) examples/quickstart.py

# the docs extra too: without it the tests of the rendered API pages would skip
test: $(VENV)/.installed-test $(VENV)/.installed-docs
	$(PY) -m pytest -q -n 2

# --strict: a broken reference or a docstring griffe cannot match to its signature fails
# the build. NO_MKDOCS_2_WARNING silences mkdocs-material's banner about its successor.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

# the language-model rows on a CUDA GPU in bf16 (with the python that has CUDA torch and
# Triton): every check and benchmark in one call (benchmarks/gpu.py). A GPU machine without
# a package index gets Liger-Kernel, Cut Cross-Entropy and this package's pure-Python
# dependencies from benchmarks/wheels/ (`make gpu-wheels` where pip reaches an index, then
# carry the folder along), installed with --no-index into $(GPU_SITE)
GPU_WHEELS := benchmarks/wheels
GPU_SITE ?= /tmp/dcer-gpu-site
bench-gpu:
	if ls $(GPU_WHEELS)/*.whl >/dev/null 2>&1; then $(PYTHON) -m pip install --quiet --no-index --no-deps --no-compile --target $(GPU_SITE) $(GPU_WHEELS)/*.whl; fi
	PYTHONUNBUFFERED=1 PYTHONPATH=.:$(GPU_SITE) $(PYTHON) benchmarks/gpu.py $(GPU_ARGS)

# the wheels bench-gpu installs: liger-kernel and cut-cross-entropy need only torch and
# triton (the GPU machine's); beartype and einops are this package's own dependencies
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: -d $(GPU_WHEELS) liger-kernel cut-cross-entropy beartype einops

# every example with its defaults, its RESULT line into the README's table (several minutes)
# Run it as the last step before a release, after every change that could move a number, so that
# the table shows the released code (a rerun of unchanged code moves a row a little: the table's
# notes say how much; examples/hybrid_actions_torchrl.py's PLAIN_RETURN quotes hybrid_actions.py's row).
examples-table: $(VENV)/.installed-examples
	$(PY) benchmarks/examples_table.py

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .

wheel: $(VENV)/.installed-test
	PY=$(PY) TORCH_VERSION=$(TORCH_VERSION) TORCH_INDEX=$(TORCH_INDEX) bash .ci/check_wheel

clean:
	rm -rf $(VENV) site
