#!/usr/bin/env bash
# Reset all emulator state: POST /moto-api/reset. Only moto has this; a
# LocalStack (or anything else) is left alone with a message.
#
# Usage: reset.sh [--run-dir DIR] [URL]
#   URL defaults to the moto started from the run dir, then AWS_ENDPOINT_URL,
#   then http://127.0.0.1:4566.
# Do not call it while other tests share the server.
set -euo pipefail

LS_NAME="reset.sh"
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

run_dir="${LS_DEFAULT_RUN_DIR}"
url=""
while (($#)); do
  case "$1" in
    --run-dir) [[ -n "${2:-}" ]] || die "--run-dir needs a directory"; run_dir="$2"; shift 2 ;;
    -h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    -*) die "unknown argument: $1" ;;
    *) url="$1"; shift ;;
  esac
done

if [[ -z "${url}" ]]; then
  if [[ -f "${run_dir}/moto.port" ]]; then
    url="http://127.0.0.1:$(cat "${run_dir}/moto.port")"
  elif [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
    url="${AWS_ENDPOINT_URL}"
  else
    url="http://127.0.0.1:4566"
  fi
fi
url="${url%/}"

code="$(http_status "${url}/moto-api/")"
case "${code}" in
  000) die "${url} does not answer" ;;
  200) ;;
  *) die "${url} is not moto (GET /moto-api/ gave HTTP ${code}); reset is only for moto. For LocalStack restart it instead." ;;
esac

code="$(http_status "${url}/moto-api/reset" POST)"
[[ "${code}" == "200" ]] || die "POST ${url}/moto-api/reset gave HTTP ${code}"
log "reset ${url}: all emulator state is gone (a default VPC reappears)"
