# bgpo-book: `make book` executes the book at CPU scale and renders it; `make test` runs the tests and, when
# Quarto is found ($QUARTO or `quarto` on PATH), renders the committed book and checks the HTML.
# Every target creates .venv when it is missing; torch is pinned first so pip never pulls a CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: book test site clean venv

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
	$(MAKE) --no-print-directory site

# Render the committed chapters (no re-execution), fail on any Quarto error or warning, check the HTML
# (bgpo.book.site_problems). Without Quarto it says how to get it and succeeds; REQUIRE_QUARTO=1 fails instead.
site: $(VENV)/.test-installed
	$(BIN)/python -m bgpo.book --render-only --strict $(if $(REQUIRE_QUARTO),--require-quarto)

book: $(VENV)/.book-installed
	$(BIN)/python -m bgpo.book

clean:
	rm -rf _book .quarto .pytest_cache
