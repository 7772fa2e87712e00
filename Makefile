SHELL=/bin/bash
LINT_PATHS=sb3_meta/ tests/ examples/ benchmarks/

pytest:
	python -m pytest -v tests/

test-slow:
	python -m pytest -v -m slow tests/

type:
	mypy sb3_meta/

lint:
	ruff check ${LINT_PATHS} --output-format=full

format:
	ruff format ${LINT_PATHS}
	ruff check --fix ${LINT_PATHS}

check-codestyle:
	ruff format --check ${LINT_PATHS}

commit-checks: format type lint

.PHONY: pytest test-slow type lint format check-codestyle commit-checks
