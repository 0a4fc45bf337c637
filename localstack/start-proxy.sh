#!/usr/bin/env bash
# Start the fidelity proxy (proxy.py) on 127.0.0.1 in front of the emulator.
#
# Usage: start-proxy.sh [--port N] [--run-dir DIR] [--watch-pid PID] [--upstream URL] [PROXY ARGS...]
#   --port N        listen port (default 4567; 0 = pick a free one)
#   --run-dir DIR   where proxy.pid, proxy.port, proxy.log go (default localstack/.run)
#   --watch-pid PID stop the proxy when process PID exits (for test harnesses)
#   --upstream URL  emulator URL; default: the moto that start.sh started from the
#                   same run dir, else $AWS_ENDPOINT_URL
#   PROXY ARGS      passed to proxy.py as is (--strict, --throttle ..., --config FILE, ...)
#
# STDOUT: exactly one line, the proxy URL (http://127.0.0.1:PORT). All else to stderr.
set -euo pipefail

LS_NAME="start-proxy.sh"
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }

port=4567
run_dir="${LS_DEFAULT_RUN_DIR}"
watch_pid=""
upstream=""
pass=()
while (($#)); do
  case "$1" in
    --port) need_uint "$1" "${2:-}"; port="$2"; shift 2 ;;
    --run-dir) [[ -n "${2:-}" ]] || die "--run-dir needs a directory"; run_dir="$2"; shift 2 ;;
    --watch-pid) need_uint "$1" "${2:-}"; watch_pid="$2"; shift 2 ;;
    --upstream) [[ -n "${2:-}" ]] || die "--upstream needs a URL"; upstream="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done

if [[ -n "${watch_pid}" ]] && ! pid_alive "${watch_pid}"; then
  die "--watch-pid ${watch_pid}: no such process"
fi

mkdir -p "${run_dir}"
run_dir="$(cd "${run_dir}" && pwd)"
pidfile="${run_dir}/proxy.pid"
portfile="${run_dir}/proxy.port"
logfile="${run_dir}/proxy.log"

# Serialize concurrent starts on one run dir (e.g. parallel test binaries): the
# second caller waits here, then reuses the first one's server. fd 9 is closed
# for every background child so the lock dies with this script.
exec 9>"${run_dir}/proxy.lock"
flock -w 300 9 || die "timed out waiting for another start on ${run_dir}"
urlfile="${run_dir}/proxy.url"

if [[ -z "${upstream}" ]]; then
  if [[ -f "${run_dir}/moto.port" ]] && pid_is "$(cat "${run_dir}/moto.pid" 2>/dev/null || true)" moto_server; then
    upstream="http://127.0.0.1:$(cat "${run_dir}/moto.port")"
  elif [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
    upstream="${AWS_ENDPOINT_URL%/}"
  else
    die "no upstream: start the emulator first (start.sh --run-dir ${run_dir}), or pass --upstream URL"
  fi
fi
[[ "$(http_status "${upstream}/")" != "000" ]] || die "upstream ${upstream} does not answer"

# Reuse a proxy these scripts started from the same run dir, if it answers.
if [[ -f "${pidfile}" ]]; then
  old_pid="$(cat "${pidfile}" 2>/dev/null || true)"
  old_port="$(cat "${portfile}" 2>/dev/null || true)"
  if pid_is "${old_pid}" proxy.py; then
    if [[ -n "${old_port}" && "$(http_status "http://127.0.0.1:${old_port}/_proxy/health")" == "200" ]]; then
      if [[ "${port}" != "0" && "${port}" != "${old_port}" ]]; then
        die "a proxy from ${run_dir} already runs on port ${old_port} (PID ${old_pid}); stop it first: stop.sh --proxy --run-dir ${run_dir}"
      fi
      log "reusing proxy PID ${old_pid} on port ${old_port}; options given now are NOT applied (use POST /_proxy/config)"
      printf 'http://127.0.0.1:%s\n' "${old_port}"
      exit 0
    fi
    die "proxy PID ${old_pid} from ${run_dir} is running but does not answer; run stop.sh --proxy --run-dir ${run_dir}"
  fi
  rm -f "${pidfile}" "${portfile}"
fi

if [[ ! -x "${LS_VENV}/bin/python" ]]; then
  log "venv missing; running install.sh"
  bash "${LS_DIR}/install.sh"
fi
if [[ "${port}" != "0" ]] && port_listening "${port}"; then
  die "port ${port} on 127.0.0.1 is taken by another process; see: ss -ltnp 'sport = :${port}'"
fi

rm -f "${urlfile}"
printf -- '--- %s start-proxy.sh: proxy.py --upstream %s --port %s %s\n' \
  "$(date -u +%FT%TZ)" "${upstream}" "${port}" "${pass[*]}" >>"${logfile}"
# proxy.py binds port 0 itself and prints its URL; that line goes to a file we read.
setsid "${LS_VENV}/bin/python" "${LS_DIR}/proxy.py" --upstream "${upstream}" --port "${port}" "${pass[@]}" \
  </dev/null >"${urlfile}" 2>>"${logfile}" 9>&- &
pid=$!
printf '%s\n' "${pid}" >"${pidfile}"
[[ -z "${watch_pid}" ]] || start_watchdog "${watch_pid}" "${pid}" proxy.py "${pidfile}" "${portfile}"

deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
  pid_alive "${pid}" || break
  url="$(head -n 1 "${urlfile}" 2>/dev/null || true)"
  if [[ "${url}" == http://127.0.0.1:* && "$(http_status "${url}/_proxy/health")" == "200" ]]; then
    printf '%s\n' "${url##*:}" >"${portfile}"
    log "proxy PID ${pid} ready on ${url} -> ${upstream} (log: ${logfile})"
    printf '%s\n' "${url}"
    exit 0
  fi
  sleep 0.1
done

if pid_alive "${pid}"; then
  stop_pid "${pid}" proxy.py
fi
rm -f "${pidfile}" "${portfile}"
log_tail "${logfile}"
die "proxy did not come up within 30 s"
