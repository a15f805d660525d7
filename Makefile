# pushrl: the README's two commands are `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip --disable-pip-version-check -q

.PHONY: install demo test lint test-slow bench

install:
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'

demo: install
	$(PYTHON) -m pushrl quickstart

lint:
	$(PYTHON) -m ruff check pushrl tests benchmarks
	$(PYTHON) -m mypy
	$(PYTHON) -c 'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())'

# pytest's exit 5 (no tests collected) is a failure with its own message.
test: install lint
	@$(PYTHON) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

test-slow: install
	$(PYTHON) -m pytest -m slow

bench: install
	$(PYTHON) benchmarks/synth.py --json
