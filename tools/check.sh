#!/usr/bin/env bash
# Static checks run by the test command: ruff, mypy (strict) and import-linter's layer contracts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
py=${PYTHON:-$root/.venv/bin/python}
export PYTHONSAFEPATH=1  # operator/ must never shadow the stdlib module (python -m from here)
tree=$(tools/linktree.sh)
unmap() { sed -e "s#build/typecheck/alertpipe/operator/#operator/#" \
  -e "s#build/typecheck/alertpipe/workers/#workers/#" -e "s#build/typecheck/alertpipe/#alertpipe/#"; }
echo "== ruff"
"$py" -m ruff check .
echo "== mypy"
st=0
MYPYPATH=$tree "$py" -m mypy -p alertpipe 2>&1 | unmap; [ "${PIPESTATUS[0]}" = 0 ] || st=1
MYPYPATH=$tree "$py" -m mypy tests devstack bench || st=1
[ "$st" = 0 ] || { echo "mypy: errors above"; exit 1; }
echo "== import contracts"
# Run from inside the tree so its alertpipe (not the checkout's partial one) is imported.
(cd "$tree" && PYTHONPATH=. "$(dirname "$py")/lint-imports" "$root/pyproject.toml" --no-cache) | unmap
exit "${PIPESTATUS[0]}"
