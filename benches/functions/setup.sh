#!/usr/bin/env bash
# Creates .venv-bench (at the repository root) for benches/functions/compose.py:
# Ray, Dask distributed, numpy, cloudpickle, and the squall client package
# built in release mode from client-py/. Separate from .venv on purpose: the
# peers are large and are not what the tests or CI need.
#
#   benches/functions/setup.sh          # idempotent; re-run to rebuild squall
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
venv="$root/.venv-bench"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup.sh: creating $venv from $(command -v "$python") ($("$python" --version))"
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet -r benches/functions/requirements.txt

# The squall client package, release build, installed into this venv as a
# wheel (not `maturin develop`, which would overwrite the extension that
# .venv's editable install loads from client-py/python/squall/).
echo "setup.sh: building the squall client wheel (maturin build --release)"
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
PYO3_PYTHON="$venv/bin/python" "$venv/bin/maturin" build --release --quiet \
    -m client-py/Cargo.toml -i "$venv/bin/python" -o "$wheels"
"$venv/bin/pip" install --quiet --force-reinstall --no-deps "$wheels"/squall-*.whl
# Keep the venv out of `git status` (the repository's .gitignore predates it).
echo '*' > "$venv/.gitignore"

"$venv/bin/python" - <<'PY'
import sys, ray, dask, distributed, numpy, cloudpickle, squall
print(f"setup.sh: ok: python {sys.version.split()[0]}, ray {ray.__version__}, "
      f"dask {dask.__version__}, distributed {distributed.__version__}, "
      f"numpy {numpy.__version__}, squall from {squall.__file__}")
PY
