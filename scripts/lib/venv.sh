# Shared by scripts/dev and scripts/test: a project venv with Herald installed.
# ensure_venv [extras]  -- creates .venv if needed and (re)installs when a pyproject.toml changed.
# Herald depends on herald-client, which lives in clients/python: it is installed (editable)
# in the same pip call, so pip takes it from there and never looks for it in an index.

PYTHON=${PYTHON:-python3}

# pip, minus the notices this machine's pip config prints for index folders that do not exist.
quiet_pip() {
  .venv/bin/python -m pip -q "$@" 2> >(sed "/^WARNING: Location 'file:/d; /BuildBackendWarning\|editable_wheel\|^ *\*\*\*\|^ *!!\|^ *$\|Please be careful\|name as your package\|with strategy, WheelFile/d" >&2)
}

ensure_venv() {
  local extras=${1:-}
  local spec="."
  [ -n "$extras" ] && spec=".[$extras]"
  if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
      echo "python3 -m venv failed; installing python3-venv" >&2
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv .venv
    fi
  fi
  local stamp=".venv/.herald-installed${extras:+-$extras}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ clients/python/pyproject.toml -nt "$stamp" ]; then
    echo "installing Herald${extras:+ with [$extras]} and its client into .venv ..." >&2
    quiet_pip install --upgrade pip >/dev/null
    quiet_pip install -e clients/python -e "$spec"
    touch "$stamp"
  fi
}
