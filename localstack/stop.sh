#!/usr/bin/env bash
# Stop what start.sh / start-proxy.sh started, by the PID in their pid files only.
#
# Usage: stop.sh [--run-dir DIR] [--proxy | --moto]
#   --run-dir DIR  the run dir given to start.sh / start-proxy.sh (default localstack/.run)
#   --proxy        stop only the proxy      --moto  stop only moto
#   (default: stop both, the proxy first)
#
# SIGTERM, bounded wait, then SIGKILL. Never kills by process name.
set -euo pipefail

LS_NAME="stop.sh"
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }

run_dir="${LS_DEFAULT_RUN_DIR}"
which="both"
while (($#)); do
  case "$1" in
    --run-dir) [[ -n "${2:-}" ]] || die "--run-dir needs a directory"; run_dir="$2"; shift 2 ;;
    --proxy) which="proxy"; shift ;;
    --moto) which="moto"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
  esac
done

stopped=0

# stop_one NAME PATTERN: NAME.pid/NAME.port in the run dir; PATTERN must be in
# the process's command line, so a reused PID is never killed.
stop_one() {
  local name="$1" pattern="$2" pidfile="${run_dir}/$1.pid" portfile="${run_dir}/$1.port" pid
  [[ -f "${pidfile}" ]] || return 0
  pid="$(cat "${pidfile}" 2>/dev/null || true)"
  if pid_is "${pid}" "${pattern}"; then
    log "stopping ${name} PID ${pid}"
    stop_pid "${pid}" "${pattern}"
    stopped=1
  else
    log "${name}: PID ${pid:-?} from ${pidfile} is not running; removing stale files"
  fi
  rm -f "${pidfile}" "${portfile}" "${run_dir}/$1.url"
}

case "${which}" in
  proxy) stop_one proxy proxy.py ;;
  moto) stop_one moto moto_server ;;
  both) stop_one proxy proxy.py; stop_one moto moto_server ;;
esac

((stopped)) || log "nothing to stop in ${run_dir}"
exit 0
