# The two commands of the README, and the checks behind them.
.PHONY: setup demo test lint typecheck

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/python -m orchestrator.demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: setup
	.venv/bin/mypy shared_schemas/src service_kit/src tiny_models/src editor_service/src reward_service/src orchestrator/src

test: lint typecheck
	.venv/bin/pytest
