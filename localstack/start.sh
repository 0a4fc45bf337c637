#!/usr/bin/env bash
# Start the local AWS emulator (moto server) on 127.0.0.1 and print its URL.
#
# Usage: start.sh [--port N] [--run-dir DIR] [--watch-pid PID] [--running N]
#   --port N        listen port (default 4566, LocalStack's; 0 = pick a free one)
#   --run-dir DIR   where moto.pid, moto.port, moto.log go (default localstack/.run)
#   --watch-pid PID stop the server when process PID exits (for test harnesses)
#   --running N     MOTO_ECS_SERVICE_RUNNING: running tasks ECS services report (default 1)
#
# STDOUT: exactly one line, the endpoint URL (http://127.0.0.1:PORT). All else
# goes to stderr. With AWS_ENDPOINT_URL set (e.g. a licensed LocalStack) nothing
# is started: the URL is checked to answer and printed as is.
set -euo pipefail

LS_NAME="start.sh"
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }

port=4566
run_dir="${LS_DEFAULT_RUN_DIR}"
watch_pid=""
running=1
while (($#)); do
  case "$1" in
    --port) need_uint "$1" "${2:-}"; port="$2"; shift 2 ;;
    --run-dir) [[ -n "${2:-}" ]] || die "--run-dir needs a directory"; run_dir="$2"; shift 2 ;;
    --watch-pid) need_uint "$1" "${2:-}"; watch_pid="$2"; shift 2 ;;
    --running) need_uint "$1" "${2:-}"; running="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
  esac
done

# An external emulator (licensed LocalStack, a shared moto...) was chosen by the
# caller: start nothing, only make sure it answers. Any HTTP status counts,
# because LocalStack answers 404 on "/".
if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
  url="${AWS_ENDPOINT_URL%/}"
  code="$(http_status "${url}/")"
  [[ "${code}" != "000" ]] || die "AWS_ENDPOINT_URL=${url} does not answer (unset it to start moto)"
  log "AWS_ENDPOINT_URL is set; using ${url} (HTTP ${code}); nothing started"
  printf '%s\n' "${url}"
  exit 0
fi

if [[ -n "${watch_pid}" ]] && ! pid_alive "${watch_pid}"; then
  die "--watch-pid ${watch_pid}: no such process"
fi

mkdir -p "${run_dir}"
run_dir="$(cd "${run_dir}" && pwd)"
pidfile="${run_dir}/moto.pid"
portfile="${run_dir}/moto.port"
logfile="${run_dir}/moto.log"

# Serialize concurrent starts on one run dir (e.g. parallel test binaries): the
# second caller waits here, then reuses the first one's server. fd 9 is closed
# for every background child so the lock dies with this script.
exec 9>"${run_dir}/moto.lock"
flock -w 300 9 || die "timed out waiting for another start on ${run_dir}"

# Reuse a server these scripts started from the same run dir, if it answers.
if [[ -f "${pidfile}" ]]; then
  old_pid="$(cat "${pidfile}" 2>/dev/null || true)"
  old_port="$(cat "${portfile}" 2>/dev/null || true)"
  if pid_is "${old_pid}" moto_server; then
    if [[ -n "${old_port}" && "$(http_status "http://127.0.0.1:${old_port}/moto-api/")" == "200" ]]; then
      if [[ "${port}" != "0" && "${port}" != "${old_port}" ]]; then
        die "moto from ${run_dir} already runs on port ${old_port} (PID ${old_pid}); stop it first: stop.sh --run-dir ${run_dir}"
      fi
      log "reusing moto PID ${old_pid} on port ${old_port} (started earlier from ${run_dir})"
      [[ -z "${watch_pid}" ]] || log "note: --watch-pid is not applied to a reused server"
      printf 'http://127.0.0.1:%s\n' "${old_port}"
      exit 0
    fi
    die "moto PID ${old_pid} from ${run_dir} is running but does not answer on port ${old_port:-?}; run stop.sh --run-dir ${run_dir}"
  fi
  log "removing stale pid file ${pidfile} (PID ${old_pid:-?} is gone)"
  rm -f "${pidfile}" "${portfile}"
fi

if [[ ! -x "${LS_VENV}/bin/moto_server" ]]; then
  log "venv missing; running install.sh"
  bash "${LS_DIR}/install.sh"
fi

t0="${EPOCHREALTIME}"
attempts=1
[[ "${port}" != "0" ]] || attempts=3 # a picked free port can be taken before moto binds it
for ((attempt = 1; attempt <= attempts; attempt++)); do
  want_port="${port}"
  [[ "${port}" != "0" ]] || want_port="$(free_port)"
  if port_listening "${want_port}"; then
    [[ "${port}" == "0" ]] && continue
    die "port ${want_port} on 127.0.0.1 is taken by another process (not a moto started from ${run_dir}); see: ss -ltnp 'sport = :${want_port}'"
  fi

  printf -- '--- %s start.sh: moto_server -H 127.0.0.1 -p %s (MOTO_ECS_SERVICE_RUNNING=%s)\n' \
    "$(date -u +%FT%TZ)" "${want_port}" "${running}" >>"${logfile}"
  # setsid: the server must not die with the caller's terminal or process
  # group; it is stopped by stop.sh or by the watchdog only.
  # MOTO_IAM_LOAD_MANAGED_POLICIES: AWS's managed policies exist, as on AWS
  # (secep attaches AmazonECSTaskExecutionRolePolicy to its execution role).
  MOTO_IAM_LOAD_MANAGED_POLICIES=true MOTO_ECS_SERVICE_RUNNING="${running}" setsid "${LS_VENV}/bin/moto_server" -H 127.0.0.1 -p "${want_port}" \
    </dev/null >>"${logfile}" 2>&1 9>&- &
  pid=$!
  printf '%s\n' "${pid}" >"${pidfile}"
  printf '%s\n' "${want_port}" >"${portfile}"
  [[ -z "${watch_pid}" ]] || start_watchdog "${watch_pid}" "${pid}" moto_server "${pidfile}" "${portfile}"

  # Wait (bounded, ~30 s) until the admin API answers 200.
  deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if ! pid_alive "${pid}"; then break; fi
    if [[ "$(http_status "http://127.0.0.1:${want_port}/moto-api/")" == "200" ]]; then
      log "moto PID ${pid} ready on 127.0.0.1:${want_port} after $(elapsed "${t0}") s (log: ${logfile})"
      printf 'http://127.0.0.1:%s\n' "${want_port}"
      exit 0
    fi
    sleep 0.1
  done

  if pid_alive "${pid}"; then
    stop_pid "${pid}" moto_server
    rm -f "${pidfile}" "${portfile}"
    log_tail "${logfile}"
    die "moto did not answer on http://127.0.0.1:${want_port}/moto-api/ within 30 s; stopped it"
  fi
  rm -f "${pidfile}" "${portfile}"
  if [[ "${port}" == "0" && "${attempt}" -lt "${attempts}" ]] && tail -n 5 "${logfile}" | grep -q 'in use'; then
    log "picked port ${want_port} was taken meanwhile; retrying"
    continue
  fi
  log_tail "${logfile}"
  die "moto_server exited during start-up"
done
die "could not find a free port after ${attempts} attempts"
