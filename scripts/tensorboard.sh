#!/usr/bin/env bash
# Start TensorBoard over a log directory, on the loopback interface only.
#
#   scripts/tensorboard.sh [LOGDIR] [PORT] [-- MORE TENSORBOARD FLAGS]
#
#   LOGDIR  the folder holding the run directories (default: logs)
#   PORT    the TCP port (default: 6006)
#
# Prints the URL first, then runs TensorBoard in the foreground (Ctrl-C stops it).
# TensorBoard has no authentication, so it listens on 127.0.0.1 only. To listen
# elsewhere set TB_HOST (e.g. TB_HOST=0.0.0.0): that prints a warning, because
# anyone who can reach the port can then read every run under LOGDIR.
#
# The tensorboard executable is taken from, in order: $TENSORBOARD, the active
# virtual environment ($VIRTUAL_ENV/bin), the repository's .venv/bin, then PATH.
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
esac

logdir="logs"
port="6006"
if [[ $# -gt 0 && "$1" != "--" ]]; then logdir="$1"; shift; fi
if [[ $# -gt 0 && "$1" != "--" ]]; then port="$1"; shift; fi
if [[ $# -gt 0 && "$1" == "--" ]]; then shift; fi
extra=("$@")

if ! [[ "$port" =~ ^[0-9]+$ ]] || (( port < 1 || port > 65535 )); then
  echo "tensorboard.sh: error: PORT must be a number in 1..65535, got '$port'" >&2
  exit 2
fi
for arg in "${extra[@]+"${extra[@]}"}"; do
  case "$arg" in
    --host|--host=*|--bind_all|--bind_all=*|--logdir|--logdir=*|--port|--port=*)
      echo "tensorboard.sh: error: give LOGDIR and PORT as arguments and the host as" \
           "TB_HOST, not '$arg'" >&2
      exit 2 ;;
  esac
done

host="${TB_HOST:-127.0.0.1}"
case "$host" in
  127.*|localhost|::1|"[::1]") ;;
  *) echo "tensorboard.sh: WARNING: TB_HOST=$host is not a loopback address: TensorBoard" \
          "has no authentication, so anyone who can reach $host:$port can read every run" \
          "under $logdir" >&2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${TENSORBOARD:-}" ]]; then
  tensorboard="$TENSORBOARD"
elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/tensorboard" ]]; then
  tensorboard="$VIRTUAL_ENV/bin/tensorboard"
elif [[ -x "$repo/.venv/bin/tensorboard" ]]; then
  tensorboard="$repo/.venv/bin/tensorboard"
elif command -v tensorboard >/dev/null 2>&1; then
  tensorboard="$(command -v tensorboard)"
else
  echo "tensorboard.sh: error: no tensorboard executable found: activate the environment" \
       "where the harness is installed (pip install tensorboard), or set TENSORBOARD" >&2
  exit 127
fi

if [[ ! -d "$logdir" ]]; then
  echo "tensorboard.sh: note: $logdir does not exist yet; runs appear once they write there" >&2
fi

url_host="$host"
[[ "$url_host" == *:* && "$url_host" != \[* ]] && url_host="[$url_host]"  # IPv6 literal
echo "TensorBoard: http://$url_host:$port/  (logdir $logdir; Ctrl-C to stop)"

export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$tensorboard" --logdir "$logdir" --host "$host" --port "$port" \
  ${extra[@]+"${extra[@]}"}
