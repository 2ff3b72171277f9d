# make tour: install into .venv, then run the whole lecture on the embedded model (HTML report).
# make test: install into .venv (with test extras), then run the test suite.
# make lint: install into .venv (with the dev extra: ruff and mypy pinned), then ruff on the code and mypy on the package.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tour test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

tour: install
	$(BIN)/convlens tour --quick --out convlens-out/tour

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lint: install
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) convlens-out .pytest_cache
