# Two commands for a newcomer: `make demo` and `make test`. Both create/refresh .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing Debian's python3-venv" >&2; \
	  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/callbridge demo

lint: $(STAMP)
	$(BIN)/ruff check callbridge tests bench
	$(BIN)/ruff format --check callbridge tests bench

typecheck: $(STAMP)
	$(BIN)/mypy callbridge

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/ami_parse.py
	$(BIN)/python bench/tracker.py --calls 20000
	$(BIN)/python bench/bitrix24_limiter.py --seconds 600 --speed 10
	$(BIN)/python bench/agi.py
	$(BIN)/python bench/click_to_call.py --clicks 1000
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
