#!/usr/bin/env bash
# A short scripted tour of keymesh for `make demo`: start a three-root
# development cluster with its three nodes, run the commands an operator
# would (see node-1 and node-2 peer, approve the pending node-3, collect its
# certificate and run its agent into the mesh, mint and verify a node
# token, authorize the admin token, read the policies, rotate a node key and
# see the older token still verify, announce routes and see them checked
# along their signed paths, revoke a node and see its sessions and routes
# end and its renewal fail), stop it, and check that it cleaned up after
# itself.
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
agent_pid=

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

# wait_peers waits until the agent of node dir has want established
# sessions (polling the agent: there is nothing else to wait on).
wait_peers() {
	local dir=$1 want=$2 i got
	for ((i = 0; i < ready_deadline * 10; i++)); do
		got=$("$km" peers list --data-dir "$dir" --output json 2>/dev/null | grep -o '"state":"Established"' | wc -l || true)
		((got == want)) && return 0
		sleep 0.1
	done
	echo "tour: $(basename "$dir") has $got established sessions after ${ready_deadline}s, want $want" >&2
	"$km" peers list --data-dir "$dir" >&2 || true
	exit 1
}

# wait_members waits until the agent of node dir counts want members in
# state (polling the agent).
wait_members() {
	local dir=$1 state=$2 want=$3 i got
	for ((i = 0; i < ready_deadline * 10; i++)); do
		got=$("$km" members list --data-dir "$dir" --output json 2>/dev/null | grep -o "\"state\":\"$state\"" | wc -l || true)
		((got == want)) && return 0
		sleep 0.1
	done
	echo "tour: $(basename "$dir") has $got members $state after ${ready_deadline}s, want $want" >&2
	"$km" members list --data-dir "$dir" >&2 || true
	exit 1
}

# wait_route waits until the agent of node dir holds (want=1) or does not
# hold (want=0) a best route for nlri (polling the agent).
wait_route() {
	local dir=$1 nlri=$2 want=$3 i got
	for ((i = 0; i < ready_deadline * 10; i++)); do
		got=$("$km" routes list --data-dir "$dir" --output json 2>/dev/null | grep -o "\"nlri\":\"$nlri\",[^}]*\"best\":true" | wc -l || true)
		((got == want)) && return 0
		sleep 0.1
	done
	echo "tour: $(basename "$dir") has $got best routes for $nlri after ${ready_deadline}s, want $want" >&2
	"$km" routes list --data-dir "$dir" >&2 || true
	exit 1
}

# stop_agent stops the node agent the tour started, if it runs.
stop_agent() {
	[[ -n $agent_pid ]] || return 0
	kill -INT "$agent_pid" 2>/dev/null || true
	local i
	for ((i = 0; i < stop_deadline * 10; i++)); do
		kill -0 "$agent_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$agent_pid" 2>/dev/null || true
	wait "$agent_pid" 2>/dev/null || true
	agent_pid=
}

cleanup() {
	local status=$?
	stop_agent
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

# step_fails shows a command that must fail with exit status 1, runs it,
# and stops the tour if it succeeds or fails otherwise.
step_fails() {
	show_fails "$*" "$@"
}

# show_run shows SHOWN as the command (to keep long tokens off the screen),
# then runs keymesh with the remaining arguments.
show_run() {
	printf '\n$ keymesh %s\n' "$1"
	shift
	"$km" "$@"
}

# show_fails is show_run for a command that must fail with exit status 1.
show_fails() {
	printf '\n$ keymesh %s    # expected to fail\n' "$1"
	shift
	local status=0
	"$km" "$@" || status=$?
	if ((status != 1)); then
		echo "tour: \`keymesh $*\` exited with status $status; it must fail with status 1" >&2
		exit 1
	fi
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

# Nodes: node-1 and node-2 joined with a token, and keymesh dev runs their
# agents, peering over mutual TLS; node-3 waits for approval.
if [[ -z ${KEYMESH_PENDING_REGISTRATION:-} ]]; then
	echo "tour: keymesh dev named no pending registration (KEYMESH_PENDING_REGISTRATION)" >&2
	exit 1
fi
node1="$dev_dir/node-1"
node2="$dev_dir/node-2"
node3="$dev_dir/node-3"
wait_peers "$node1" 1
step peers list --data-dir "$node1"
step registrations list
step registrations approve "$KEYMESH_PENDING_REGISTRATION"
step node join --resume --data-dir "$node3"
if command -v openssl >/dev/null; then
	printf '\n$ openssl x509 -noout -subject -ext subjectAltName -in %s\n' "$node1/node.pem"
	openssl x509 -noout -subject -ext subjectAltName -in "$node1/node.pem"
fi
step node renew --data-dir "$node1"

# node-3's agent joins the mesh with the command keymesh dev printed.
read -r -a run3 < <(sed -n 's/^  keymesh \(node run --data-dir .*node-3 .*\)$/\1/p' "$work/dev.out")
if ((${#run3[@]} == 0)); then
	echo "tour: keymesh dev printed no command to run node-3's agent" >&2
	exit 1
fi
printf '\n$ keymesh %s &\n' "${run3[*]}"
"$km" "${run3[@]}" --log-level warn >"$work/agent.out" 2>"$work/agent.log" &
agent_pid=$!
for ((i = 0; ; i++)); do
	[[ -S $node3/agent.sock ]] && break
	if ! kill -0 "$agent_pid" 2>/dev/null || ((i >= ready_deadline * 10)); then
		echo "tour: the agent of node-3 did not start; its log:" >&2
		cat "$work/agent.log" >&2
		exit 1
	fi
	sleep 0.1
done
cat "$work/agent.out"
wait_peers "$node3" 2
wait_peers "$node1" 2
step peers list --data-dir "$node3"
# The agents gossip: each knows the others by their signed membership.
wait_members "$node3" alive 3
step members list --data-dir "$node3"
step gossip keyring

# Routes: node-1 originates a prefix and node-2 a service, each signed by
# its node key; node-3 takes both, each checked along its signed path.
step routes authorize 10.20.0.0/16 --origin node-1 --max-length 24
step routes announce 10.20.1.0/24 --data-dir "$node1" --next-hop 10.0.0.21
step routes announce service:web.prod --data-dir "$node2"
wait_route "$node3" 10.20.1.0/24 1
wait_route "$node3" service:web.prod 1
step routes list --data-dir "$node3"

# Routers: the authorization, with the network's AS, is what a BIRD or FRR
# router gets over RTR from every root (keymesh dev serves it on each).
step network show
step rtr dump

# Tokens: node-1 mints a token for node-2 under its own key; node-2's agent
# verifies it locally, and a root server does too.
network=$(sed -n 's/^keymesh dev: network \([^,]*\),.*/\1/p' "$work/dev.out")
aud="spiffe://$network/node/node-2"
printf '\n$ tok=$(keymesh token mint --data-dir %s --aud %s)\n' "$node1" "$aud"
tok=$("$km" token mint --data-dir "$node1" --aud "$aud")
echo "${tok:0:48}... (${#tok} characters)"
show_run "token verify \"\$tok\" --data-dir $node2" token verify "$tok" --data-dir "$node2"
show_run "token verify \"\$tok\" --aud $aud" token verify "$tok" --aud "$aud"
show_fails "token verify \"\$tok\" --data-dir $node1" token verify "$tok" --data-dir "$node1"

# The system admin token of bootstrap, and what ADMIN may do.
printf '\n$ keymesh authorize - < %s\n' "$dev_dir/r1/admin.token"
"$km" authorize - <"$dev_dir/r1/admin.token"
printf '\n$ keymesh policy get | head -n 8\n'
"$km" policy get >"$work/policy.cedar" # whole, then shown: no SIGPIPE under pipefail
head -n 8 "$work/policy.cedar"

# Key rotation: node-1 gets a new key; the token its old key signed still
# verifies until it expires.
step node rotate-key --data-dir "$node1"
show_run "token verify \"\$tok\" --data-dir $node2" token verify "$tok" --data-dir "$node2"
step node status --data-dir "$node1"

# A revoked node loses its sessions at once, and cannot renew its
# certificate.
step revoke node node-2 --reason decommissioned
wait_peers "$node1" 1
wait_peers "$node3" 1
wait_route "$node3" service:web.prod 0
step peers list --data-dir "$node1"
step routes list --data-dir "$node3"
# ... and its revocation rotates the gossip key: the others take the new
# key, node-2 can neither read nor join the gossip.
wait_members "$node1" revoked 1
step members list --data-dir "$node1"
step gossip rotate-key --wait 30s
step_fails node renew --data-dir "$node2"
stop_agent

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
