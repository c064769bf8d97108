# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export KERAS_BACKEND ?= torch

.PHONY: demo test venv bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The stamp is rebuilt whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python -m weightgraft.demo

# The whole suite on Keras's torch backend, then every Keras test again on JAX: the Keras
# adapter, layouts and trackers must not depend on which backend runs them.
test: $(VENV)/.installed
	$(BIN)/python -m pytest -n 2 -q
	KERAS_BACKEND=jax $(BIN)/python -m pytest -n 2 -q -m keras -p no:cacheprovider

bench: $(VENV)/.installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
