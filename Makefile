# The two set-up commands in the README are `make run` and `make test`; everything else is a helper.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
export HOMEPRICE_HOME ?= $(CURDIR)/.homeprice
# Python caches compiled modules (.pyc) in the venv on first import. A shell or CI runner with
# PYTHONDONTWRITEBYTECODE set would make every process (each CLI call, code server, Bento worker, test
# subprocess) compile Dagster, MLflow and SciPy from source again: seconds per process start.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install run dev test test-fast lint bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --python $(BIN)/python --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

## Land the bundled Seattle sales and materialize the whole asset graph.
run: install
	$(BIN)/homeprice run

## Open the Dagster UI on the project home (sensors and schedules included).
dev: install
	$(BIN)/homeprice dev

## The whole test suite, as CI runs it, with coverage (the floor is fail_under in setup.cfg); two workers, one
## test file each at a time (a file's tests share module fixtures and run in order).
test: install
	$(BIN)/python -m homeprice_assets_tests.prepare
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder --cov --cov-report=term

test-fast: install
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not slow"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(HOMEPRICE_HOME)
