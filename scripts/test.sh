#!/usr/bin/env bash
# Set up (idempotent) and run the test suite; extra args go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
