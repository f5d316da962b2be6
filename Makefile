# Two commands on a fresh machine:
#   make run    train the seed net, write seed.cnnkit: .venv gets cnnkit and the example plugin only
#               (numpy, pydantic, msgpack, typer, rich, pillow; no torch, no npm)
#   make test   the test suite: adds the test tools, PyTorch 2.13 (CPU) as the reference and the Node
#               reader's dependency to the same .venv, then runs pytest
# Each step is a stamp file in the venv, so a second `make` installs nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP = $(1)/pip install -q --disable-pip-version-check --no-warn-script-location
PLUGINS := $(wildcard plugins/*/pyproject.toml)
# The test and bench venvs pin torch's CPU build: `torch>=2.13` alone lets pip pick the newest
# release, a CUDA build of several GB. On this project's machines pip takes 2.13.0+cpu from a local
# wheel; elsewhere set TORCH_CPU to the pip arguments that bring a CPU build on your platform
# (PyTorch's install page gives them).
TORCH_CPU ?= torch==2.13.0

.PHONY: install setup data browser run fast test test-torchvision docs docs-serve bench bench-serve layers-doc clean

# cnnkit (editable) with its core dependencies and every plugin under plugins/.
$(VENV)/.core: pyproject.toml $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(call PIP,$(BIN)) -e . $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

# What the tests need on top: the test extra, and the Node reader of the bundle format
# (tools/read_bundle.mjs), tested against Python's.
$(VENV)/.test: $(VENV)/.core tools/package-lock.json
	$(call PIP,$(BIN)) -e '.[test]' $(TORCH_CPU)
	if command -v npm >/dev/null; then npm ci --prefix tools --no-audit --no-fund --loglevel=error; fi
	touch $@

$(VENV)/.bench: $(VENV)/.core
	$(call PIP,$(BIN)) -e '.[bench]' $(TORCH_CPU)
	touch $@

$(VENV)/.docs: $(VENV)/.core
	$(call PIP,$(BIN)) -e '.[docs]'
	touch $@

install: $(VENV)/.core
setup: $(VENV)/.test $(VENV)/.bench $(VENV)/.docs

# Fashion-MNIST from Debian's package when we can install it; otherwise cnnkit searches and downloads.
data:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; fi

# Debian's chromium for the page test (tests/test_serve_page.py drives it with Playwright and skips without it).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null; fi

run: install data
	$(BIN)/cnnkit run specs/fashion_mnist_seed.json --out seed.cnnkit

fast: install data
	$(BIN)/cnnkit run specs/fashion_mnist_fast.json --out fast.cnnkit

test: $(VENV)/.test data browser
	$(BIN)/python -m pytest -q

# The torchvision source and the PyTorch parity tests on torchvision's own torch: torchvision 0.29.1
# is built for torch 2.14.1, a CUDA build (~5.5 GB with its dependencies), so it gets a venv of its
# own, kept out of `make test`. CI (.ci/run) runs it.
TV_VENV ?= .venv-tv
$(TV_VENV)/.installed: pyproject.toml $(PLUGINS)
	$(PYTHON) -m venv $(TV_VENV)
	$(call PIP,$(TV_VENV)/bin) -e '.[test,torchvision]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

test-torchvision: $(TV_VENV)/.installed data
	$(TV_VENV)/bin/python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	$(TV_VENV)/bin/python -m pytest -q -m "torch or torchvision" -p no:cacheprovider

# The documentation site (mkdocs-material) into site/; --strict turns a broken link into a failure.
# NO_MKDOCS_2_WARNING: mkdocs-material's banner about its successor, printed on every build.
docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

bench: $(VENV)/.bench data
	$(BIN)/python tools/bench.py

bench-serve: $(VENV)/.test
	$(BIN)/python tools/bench_serve.py

# docs/LAYERS.md documents every layer type of the development setup (built-ins + plugins/*); a
# test checks that it is current. (The command reference is rendered when the site is built.)
layers-doc: $(VENV)/.core
	$(BIN)/cnnkit layers --markdown > docs/LAYERS.md

clean:
	rm -rf $(VENV) $(TV_VENV) site *.cnnkit
