# sslray: every target works on a fresh machine with nothing run before (targets pull in what they need).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST_SRC := /usr/share/datasets/fashion-mnist
FMNIST_OUT := data/fmnist
PYTEST_ARGS ?=

.PHONY: install data fmnist-source sweep test lint format bench clean distclean

install: $(STAMP)

# Re-runs only when pyproject.toml changes. pip's log goes to a file (its "location ignored"
# warnings drown everything else) and is shown if the install fails.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing sslray and its dependencies into $(VENV) (log: $(VENV)/pip-install.log) ..."
	@$(PY) -m pip install --disable-pip-version-check -e '.[dev]' > $(VENV)/pip-install.log 2>&1 \
		|| { tail -n 40 $(VENV)/pip-install.log; echo "make install: pip failed (full log: $(VENV)/pip-install.log)"; exit 1; }
	@touch $@
	@echo "Installed: $$($(PY) -c 'import torch, ray, sslray; print("sslray", sslray.__version__, "| torch", torch.__version__, "| ray", ray.__version__)')"

# The embedded default dataset comes from Debian's package dataset-fashion-mnist.
fmnist-source:
	@if [ ! -f $(FMNIST_SRC)/train-images-idx3-ubyte.gz ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist) ..."; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null \
				|| { echo "make: apt-get install dataset-fashion-mnist failed"; exit 2; }; \
		else \
			echo "Fashion-MNIST is not installed ($(FMNIST_SRC) is missing). Either:"; \
			echo "  sudo apt-get install dataset-fashion-mnist      (Debian/Ubuntu), then re-run make"; \
			echo "  or download the four *-ubyte.gz files and run:"; \
			echo "  $(PY) -m sslray.cli data prepare fashion-mnist $(FMNIST_OUT) --path DIR"; \
			exit 2; \
		fi; \
	fi

# The stamp's name changes with the splits `make data` writes (v2: train, val, test), so an older data/
# folder is prepared again instead of lacking a split.
data: $(FMNIST_OUT)/.prepared-v2

$(FMNIST_OUT)/.prepared-v2: | install fmnist-source
	$(VENV)/bin/sslray data prepare fashion-mnist $(FMNIST_OUT) --overwrite
	@touch $@

# The main job: the quickstart sweep on a local Ray (or RAY_ADDRESS / ARGS="--address ..."), then
# its leaderboard. SPACE=search_spaces/other.yaml sweeps another space; ARGS adds overrides/options.
SPACE ?= search_spaces/quickstart.yaml
ARGS  ?=
sweep: data
	$(VENV)/bin/sslray sweep $(SPACE) $(ARGS)

# tests/test_architecture.py runs `ruff check` and `ruff format --check` too: `make test` fails on lint.
test: install fmnist-source
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Rewrites files: ruff's fixes that are safe, then the formatter (configured in pyproject.toml).
format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: install fmnist-source
	$(PY) benchmarks/augment_throughput.py

# GPU throughput of `sslray train` next to a plain PyTorch loop (docs/benchmarks.md, "GPU"); ~8 min on one GPU.
.PHONY: bench-gpu
OUT ?= benchmarks/results/gpu-$(shell date +%Y%m%d-%H%M%S)
bench-gpu: install
	$(PY) benchmarks/gpu.py --out $(OUT)

clean:
	rm -rf $(FMNIST_OUT) .pytest_cache build *.egg-info  # runs/ and sweeps/ are results: never removed
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
