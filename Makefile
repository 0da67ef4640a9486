# `make run`: set up (first time) and start the Telegram bot.  `make test`: set up and run the tests.
# `make lint`: ruff and mypy over the tree.
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup run test lint bench clean

setup: $(STAMP)

# Reinstalls only when the dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test,face,lint,scale]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/castfinder bot

# Tests never download: models are tiny random ones built from configs, or the real weights
# in ../shared. pytest's exit code 5 (nothing collected) means the suite went missing: a failure.
test: $(STAMP)
	@set +e; \
	HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/python -m pytest $(PYTEST_ARGS); \
	rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing on purpose" >&2; exit 1; fi; \
	exit $$rc

# ruff (pyflakes, pycodestyle, isort, bugbear) and mypy, as configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 $(VENV)/bin/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) .pytest_cache
