#!/usr/bin/env bash
# Install the local AWS emulator (moto server) into localstack/.venv.
# Idempotent: if the pinned version is already importable from the venv it
# returns at once, so test harnesses may call it unconditionally.
set -euo pipefail

MOTO_VERSION="5.2.5"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${HERE}/.venv"
PY="${VENV}/bin/python"

log() { printf 'install.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Already installed at the pinned version? Ask the venv's own python, since the
# moto_server script alone says nothing about the version.
if [[ -x "${PY}" ]]; then
  have="$("${PY}" - <<'PYEOF' 2>/dev/null || true
import importlib.metadata as m
try:
    print(m.version("moto"))
except m.PackageNotFoundError:
    pass
PYEOF
)"
  if [[ "${have}" == "${MOTO_VERSION}" && -x "${VENV}/bin/moto_server" ]]; then
    log "moto ${MOTO_VERSION} already installed in ${VENV}"
    exit 0
  fi
  log "venv exists but moto is '${have:-absent}', want ${MOTO_VERSION}; installing"
fi

command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH (need Python >= 3.9 with the venv module)"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 \
  || die "python3 has no working venv/ensurepip module (on Debian: apt-get install python3-venv)"

if [[ ! -x "${PY}" ]]; then
  log "creating venv ${VENV}"
  python3 -m venv "${VENV}" || die "python3 -m venv ${VENV} failed"
fi

log "installing moto[server]==${MOTO_VERSION} (about 30 s on an idle machine)"
# constraints.txt pins every transitive dependency too (flask, werkzeug, boto3...), so the emulator is the same
# on every machine and a new upstream release cannot change test results overnight.
"${PY}" -m pip install --disable-pip-version-check --no-input --quiet \
  -c "${HERE}/constraints.txt" "moto[server]==${MOTO_VERSION}" >&2 \
  || die "pip install moto[server]==${MOTO_VERSION} failed"

"${PY}" -c 'import moto, boto3' >/dev/null 2>&1 || die "moto/boto3 not importable after install"
log "done: moto ${MOTO_VERSION} in ${VENV}"
