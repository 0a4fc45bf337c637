# shellcheck shell=bash
# Helpers shared by start.sh, start-proxy.sh, stop.sh and reset.sh.
# Sourced, never run. Callers set LS_NAME (used as the log prefix) first.

LS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034 # used by the scripts that source this file
LS_VENV="${LS_DIR}/.venv"
# shellcheck disable=SC2034
LS_DEFAULT_RUN_DIR="${LS_DIR}/.run"

log() { printf '%s: %s\n' "${LS_NAME:-localstack}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Validate that $2 (the value of option $1) is a non-negative integer.
need_uint() {
  [[ "${2:-}" =~ ^[0-9]+$ ]] || die "$1 needs a non-negative integer, got '${2:-}'"
}

# HTTP status of a request to a local URL, or 000 when nothing answers.
# --noproxy: never let an http_proxy variable send local traffic elsewhere.
http_status() {
  local url="$1" method="${2:-GET}"
  curl --noproxy '*' -s -o /dev/null -m 3 -X "${method}" -w '%{http_code}' "${url}" 2>/dev/null || true
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
port_listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port that is free right now (the kernel picks it; small race, callers retry).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Seconds since EPOCHREALTIME value $1, with one decimal (for progress messages).
elapsed() {
  python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "${EPOCHREALTIME}"
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# True when PID is alive and its command line contains PATTERN. Guards every
# kill against a PID that was reused by an unrelated process.
pid_is() {
  local pid="$1" pattern="$2" cmdline
  pid_alive "${pid}" || return 1
  cmdline="$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null || true)"
  [[ "${cmdline}" == *"${pattern}"* ]]
}

# Stop PID (only if it still matches PATTERN): SIGTERM, wait up to ~10 s, SIGKILL.
stop_pid() {
  local pid="$1" pattern="$2" i
  pid_is "${pid}" "${pattern}" || return 0
  kill -TERM "${pid}" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pid_alive "${pid}" || return 0
    sleep 0.1
  done
  log "PID ${pid} ignored SIGTERM for 10 s; sending SIGKILL"
  kill -KILL "${pid}" 2>/dev/null || true
}

# Watchdog loop: when WATCH_PID exits, stop CHILD_PID and remove its pid/port
# files (if they still name that child). Runs in its own bash (start_watchdog).
watchdog_loop() {
  local watch="$1" child="$2" pattern="$3" pidfile="$4" portfile="$5"
  trap '' HUP INT
  while pid_alive "${watch}" && pid_alive "${child}"; do sleep 1; done
  if pid_alive "${child}"; then
    log "watched PID ${watch} is gone; stopping PID ${child}"
    stop_pid "${child}" "${pattern}"
  fi
  if [[ "$(cat "${pidfile}" 2>/dev/null || true)" == "${child}" ]]; then
    rm -f "${pidfile}" "${portfile}" "${pidfile%.pid}.url"
  fi
}

# Start watchdog_loop in the background, detached from our stdout so a caller
# reading our one stdout line sees EOF at once. It is a new bash process, not a
# subshell: a subshell would inherit the start lock (fd 9, see start.sh) and
# keep it held for as long as the watchdog lives.
start_watchdog() {
  LS_NAME="${LS_NAME:-localstack}" bash -c 'source "$1"; shift; watchdog_loop "$@"' watchdog "${LS_DIR}/lib.sh" \
    "$@" </dev/null >/dev/null 2>>"${4%.pid}.log" 9>&- &
  disown "$!" 2>/dev/null || true
}

# Print the last lines of a log file to stderr (for start-up failures).
log_tail() {
  [[ -f "$1" ]] || return 0
  log "last lines of $1:"
  tail -n "${2:-30}" "$1" >&2 || true
}
