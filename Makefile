# bgpo-book: `make book` executes the book at CPU scale and renders it; `make test` runs the tests.
# Every target creates .venv when it is missing; torch is pinned first so pip never pulls a CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: book test clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)

$(VENV)/.test-installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH) -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

$(VENV)/.book-installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH) -e '.[book,test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

venv: $(VENV)/.test-installed

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q tests
	$(BIN)/python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

book: $(VENV)/.book-installed
	$(BIN)/python -m bgpo.book

clean:
	rm -rf _book .quarto .pytest_cache
