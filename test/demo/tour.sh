#!/usr/bin/env bash
# A short scripted tour of keymesh for `make demo`: start a three-root
# development cluster, run the commands an operator would, stop it, and
# check that it cleaned up after itself.
#
# Usage: test/demo/tour.sh [path/to/keymesh]   (default: bin/keymesh)
# It builds nothing; `make demo` builds the binary first.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
km=${1:-$repo/bin/keymesh}
case $km in /*) ;; *) km=$PWD/$km ;; esac
if [[ ! -x $km ]]; then
	echo "tour: no keymesh binary at $km; run \`make build\` first" >&2
	exit 1
fi

ready_deadline=20 # seconds for the cluster to come up
stop_deadline=15  # seconds for it to stop

work=$(mktemp -d "${TMPDIR:-/tmp}/keymesh-tour.XXXXXX")
dev_pid=
dev_status=

# stop_dev sends SIGINT to the dev cluster and waits for it, with a
# deadline after which it is killed. It sets dev_status.
stop_dev() {
	[[ -n $dev_pid ]] || return 0
	kill -INT "$dev_pid" 2>/dev/null || true
	local i
	for ((i = 0; i < stop_deadline * 10; i++)); do
		kill -0 "$dev_pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$dev_pid" 2>/dev/null; then
		echo "tour: keymesh dev did not stop within ${stop_deadline}s; killing it" >&2
		kill -KILL "$dev_pid" 2>/dev/null || true
	fi
	dev_status=0
	wait "$dev_pid" || dev_status=$?
	dev_pid=
}

cleanup() {
	local status=$?
	stop_dev
	if ((status != 0)); then
		echo >&2
		echo "tour: FAILED (exit $status); last lines of the cluster's log:" >&2
		tail -n 20 "$work/dev.log" >&2 2>/dev/null || true
	fi
	rm -rf "$work"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# step shows a command with a prompt, then runs it.
step() {
	printf '\n$ keymesh %s\n' "$*"
	"$km" "$@"
}

echo "Starting a three-root cluster on loopback: keymesh dev --env-file $work/env"
"$km" dev --env-file "$work/env" >"$work/dev.out" 2>"$work/dev.log" &
dev_pid=$!

# The env file appears, complete, once the cluster is ready.
for ((i = 0; ; i++)); do
	[[ -f $work/env ]] && break
	if ! kill -0 "$dev_pid" 2>/dev/null; then
		echo "tour: keymesh dev exited before it was ready" >&2
		exit 1
	fi
	if ((i >= ready_deadline * 10)); then
		echo "tour: keymesh dev was not ready within ${ready_deadline}s" >&2
		exit 1
	fi
	sleep 0.1
done
echo
cat "$work/dev.out"

# shellcheck disable=SC1091
source "$work/env"
dev_dir=$(dirname "$(dirname "$KEYMESH_CA_FILE")")

step health
step root status
step root token
step tokens create --kind node --principal NODE --uses 2
step tokens list
step revoke cert 01ab23cd45ef --reason key-compromise
step revocations list --consistent

echo
echo "Stopping the cluster (SIGINT)."
stop_dev
if ((dev_status != 0)); then
	echo "tour: keymesh dev exited with status $dev_status" >&2
	exit 1
fi
if [[ -e $dev_dir ]]; then
	echo "tour: keymesh dev left its directory $dev_dir behind" >&2
	exit 1
fi
if [[ -e $work/env ]]; then
	echo "tour: keymesh dev left its env file behind" >&2
	exit 1
fi
echo "Stopped; $dev_dir is gone. Tour complete."
