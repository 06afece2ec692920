#!/usr/bin/env bash
# Static tools (mypy, import-linter) cannot follow setuptools' editable import hook that maps
# alertpipe.operator -> operator/ and alertpipe.workers -> workers/, nor symlinked folders. This
# lays a tree of hard links with the import names under build/typecheck (cheap, rebuilt on every
# call) and prints its path; tools/check.sh maps reported paths back to the real files.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree="$root/build/typecheck"
rm -rf "$tree"; mkdir -p "$tree"
cp -al "$root/alertpipe" "$tree/alertpipe"
cp -al "$root/operator" "$tree/alertpipe/operator"
cp -al "$root/workers" "$tree/alertpipe/workers"
find "$tree" -name __pycache__ -prune -exec rm -rf {} +
echo "$tree"
