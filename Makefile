# The two commands of this project: `make run` trains with the default config (add Hydra overrides
# with ARGS="model=cnn seed=1"), `make test` runs the linters, the type checker and the tests
# (`make test-fast`: the fast tests alone).
# Both create the virtual environment .venv from requirements-dev.lock the first time.
VENV := .venv
BIN := $(VENV)/bin
# The tests run in one worker per core (pytest-xdist), each taking the next test as it finishes one: many
# wait on subprocesses and the SLURM cluster, and another test uses the core meanwhile.
PARALLEL := -n auto --dist worksteal

.PHONY: run test test-fast lock

run: $(VENV)/installed
	$(BIN)/python main.py $(ARGS)

test: $(VENV)/installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright
	$(BIN)/pytest $(PARALLEL)

# The tests a developer runs after each change, in about a minute: those not marked slow (in-process
# runs on tiny data, the command line's fast paths and errors). `make test` runs them all.
test-fast: $(VENV)/installed
	$(BIN)/pytest -m "not slow" -q $(PARALLEL)

# Pin new versions after changing the dependencies in pyproject.toml.
lock:
	scripts/lock.sh

$(VENV)/installed: requirements-dev.lock
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.lock
	touch $@
