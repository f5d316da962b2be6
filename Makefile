# Two commands do everything on a fresh machine:  `make run` (train the seed net, write seed.cnnkit)
# and `make test` (the test suite). Both create .venv and install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup data browser run fast test tv-venv bench bench-serve layers-doc clean

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml) tools/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]' $(foreach p,$(wildcard plugins/*/pyproject.toml),-e $(dir $(p)))
	@# The Node reader of the bundle format (tools/read_bundle.mjs) is tested against Python's.
	if command -v npm >/dev/null; then npm ci --prefix tools --no-audit --no-fund --loglevel=error; fi
	touch $(STAMP)

setup: $(STAMP)

# Fashion-MNIST from Debian's package when we can install it; otherwise cnnkit searches and downloads.
data:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; fi

# Debian's chromium for the page test (tests/test_serve_page.py drives it with Playwright and skips without it).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null; fi

run: setup data
	$(BIN)/cnnkit run specs/fashion_mnist_seed.json --out seed.cnnkit

fast: setup data
	$(BIN)/cnnkit run specs/fashion_mnist_fast.json --out fast.cnnkit

test: setup data browser tv-venv
	$(BIN)/python -m pytest -q

# The torchvision dataset source's tests need torchvision 0.29.1, built for torch 2.14.1 (a CUDA build,
# ~5.5 GB, about a minute from local wheels); the test venv keeps torch 2.13.0+cpu, so it gets its own
# venv. tests/test_torchvision_venv.py runs in it when it exists and skips otherwise.
TV_VENV ?= .venv-tv
tv-venv: $(TV_VENV)/.installed
$(TV_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TV_VENV)
	$(TV_VENV)/bin/pip install -q -e '.[torchvision]'
	touch $@

bench: setup data
	$(BIN)/python tools/bench.py

bench-serve: setup
	$(BIN)/python tools/bench_serve.py

# docs/LAYERS.md documents every layer type installed by `make setup` (built-ins + plugins/*).
layers-doc: setup
	$(BIN)/cnnkit layers --markdown > docs/LAYERS.md

clean:
	rm -rf $(VENV) $(TV_VENV) *.cnnkit
