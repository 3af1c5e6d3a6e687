#!/usr/bin/env bash
# Installs every client of the client matrix (scripts/matrix.py, tests/matrix, docs/clients.md):
#   - each Python client in its own virtualenv under .venvs/clients/<name>/ (from PyPI, with pip);
#   - npm (the newest release that runs on this node) and undici (for node's fetch through a
#     ProxyAgent) under .venvs/clients/npm/ and .venvs/clients/undici/ (from the npm registry);
#   - the Debian tools curl, wget, git, node and npm: checked, and installed with apt-get when
#     missing and running as root.
# Re-running only installs what is missing or whose requirement changed; CREDHOP_CLIENTS_REFRESH=1
# reinstalls everything (to pick up new "newest" releases). Any failure exits non-zero.
#
# Usage: scripts/clients/install.sh [name ...]      (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-$(scripts/find-python)}
DEST=${CREDHOP_CLIENTS_DIR:-.venvs/clients}
REFRESH=${CREDHOP_CLIENTS_REFRESH:-0}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)

# name|pip requirements ("-" = nothing beyond the venv's bundled pip; "none" = no pip at all)
PY_CLIENTS=(
  "pip-bundled|-"
  "pip|--upgrade pip"
  "uv-0.5.25|uv==0.5.25"
  "uv-0.7.15|uv==0.7.15"
  "uv|uv"
  "poetry|poetry"
  "pdm|pdm hishel<2"
  "requests|requests"
  "httpx|httpx"
  "urllib3|urllib3"
  "aiohttp|aiohttp"
  "urllib|none"
)
# name|npm package spec (npm picks the newest release whose engines accept this node)
NODE_CLIENTS=(
  "npm|npm@*"
  "undici|undici@UNDICI_MAJOR"
)

log() { echo "credhop clients: $*"; }
fail() { echo "credhop clients: ERROR: $*" >&2; exit 1; }
SELECTED=("$@")
want() { # is client $1 asked for (all are, without arguments)?
  [ ${#SELECTED[@]} -eq 0 ] && return 0
  local n; for n in "${SELECTED[@]}"; do [ "$n" = "$1" ] && return 0; done; return 1
}
# pip's lines about this machine's own index configuration are noise here
quiet() { grep -v -e "is ignored: it is neither" -e "Unknown user config" || true; }

# -- Debian tools --------------------------------------------------------------
missing=()
for pair in curl:curl wget:wget git:git node:nodejs npm:npm; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    fail "please install: ${missing[*]}"
  fi
fi
git_backend=$(git --exec-path)/git-http-backend
[ -x "$git_backend" ] || fail "git http-backend not found at $git_backend (needed for the git fixture)"

# -- Python clients ----------------------------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || fail "$PYTHON is too old"
for entry in "${PY_CLIENTS[@]}"; do
  name=${entry%%|*}; reqs=${entry#*|}
  want "$name" || continue
  venv=$DEST/$name
  stamp="$venv/.credhop-client"
  spec="python=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])') reqs=$reqs"
  if [ "$REFRESH" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$spec" ]; then
    continue
  fi
  log "$name: creating $venv ($reqs)"
  rm -rf "$venv"
  if [ "$reqs" = none ]; then
    "$PYTHON" -m venv --without-pip "$venv"
  else
    "$PYTHON" -m venv "$venv"
  fi
  if [ "$reqs" != - ] && [ "$reqs" != none ]; then
    # shellcheck disable=SC2086  # reqs is a word list on purpose
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check $reqs 2>&1 | quiet; then
      fail "$name: pip install $reqs failed"
    fi
  fi
  echo "$spec" > "$stamp"
done

# -- JavaScript clients -------------------------------------------------------------
undici_major=$(node -p 'process.versions.undici.split(".")[0]')
for entry in "${NODE_CLIENTS[@]}"; do
  name=${entry%%|*}; pkg=${entry#*|}; pkg=${pkg//UNDICI_MAJOR/$undici_major}
  want "$name" || continue
  dir=$DEST/$name
  stamp="$dir/.credhop-client"
  spec="node=$(node --version) pkg=$pkg"
  if [ "$REFRESH" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$spec" ]; then
    continue
  fi
  log "$name: installing $pkg into $dir"
  rm -rf "$dir"; mkdir -p "$dir"
  if ! npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "$pkg" 2>&1 | quiet; then
    fail "$name: npm install $pkg failed"
  fi
  echo "$spec" > "$stamp"
done

# -- check that every client runs -----------------------------------------------------
check() { # name, command...
  local name=$1; shift
  want "$name" || return 0
  "$@" >/dev/null 2>&1 || fail "$name does not run: $*"
}
check pip-bundled "$DEST/pip-bundled/bin/python" -m pip --version
check pip "$DEST/pip/bin/python" -m pip --version
check uv-0.5.25 "$DEST/uv-0.5.25/bin/uv" --version
check uv-0.7.15 "$DEST/uv-0.7.15/bin/uv" --version
check uv "$DEST/uv/bin/uv" --version
check poetry "$DEST/poetry/bin/poetry" --version
check pdm "$DEST/pdm/bin/pdm" --version
for lib in requests httpx urllib3 aiohttp; do check "$lib" "$DEST/$lib/bin/python" -c "import $lib"; done
check urllib "$DEST/urllib/bin/python" -c "import urllib.request"
check npm node "$DEST/npm/node_modules/npm/bin/npm-cli.js" --version
check undici node -e "require('$DEST/undici/node_modules/undici').ProxyAgent"
log "all clients installed in $DEST"
