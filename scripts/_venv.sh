# Sourced by scripts/dev and scripts/test: a project virtual environment with the package and its dev
# extras installed, reinstalled when setup.py changes.
PYTHON="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=.venv/.atom-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e ".[dev]"
  touch "$stamp"
fi
