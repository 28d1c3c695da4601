// Package chaos runs a root cluster of real keymesh processes, with node
// agents (`keymesh node run` processes) following its trust state, under a
// mixed load, breaks it again and again (kill -9 of the leader, SIGSTOP of the
// leader, kill of a follower, isolation of the leader behind the Raft
// proxies), and then proves from the clients' histories and the servers'
// final state that nothing acknowledged was lost and that every answer was
// linearizable.
//
// # Pieces, in the order a run uses them
//
//   - Recorder: the client-side history. Every operation is an Op with its
//     invocation and completion times on one monotonic clock, its client, the
//     server it went through, and its outcome: ok (a definite answer,
//     including a definite rejection such as "exists"), fail (nothing
//     happened: refused before it was sent, or a read that failed) or unknown
//     (a write that may or may not have been committed).
//   - Load: workers that each prefer one server and fail over to the next on
//     connection errors and on answers without a definite outcome, running
//     Actions picked by weight: revocations, consistent reads and lists of
//     them, join-token creation, listing and revocation, node registrations
//     that spend join-token uses, policy writes (compare-and-set on the
//     policy version), and verifies at the roots and at the node agents of
//     tokens the load mints, in turn with an admin credential and through
//     each agent's local API under its node's own key, some of whose jti it
//     revokes. An Action is
//     one kind of operation; a new capability adds Actions and, where it has
//     state, a Model.
//   - Faults: Run drives the fault schedule against a harness.Cluster while
//     the load runs, and measures the failover of every kill (kill to the
//     first acknowledged write through a survivor).
//   - Check: after the run, the history is checked for linearizability with
//     porcupine against the models written here (the revocation set, the
//     join-token lifecycle with its uses, the policy version), against the
//     servers' final state (every acknowledged write on every root, equal
//     state hashes, no serial twice per issuer, every minted token refused
//     by every root once its revocation was acknowledged and accepted
//     otherwise), for token uses, for verifies (a root that acknowledged a
//     revocation never accepts the token afterwards), and for what an
//     isolated server acknowledged. The node agents are checked too
//     (CheckAgents): once the roots have converged (one agent killed and
//     started again first, from its persisted trust document), each agent's
//     trust.json holds every acknowledged revocation, and each agent refuses
//     every minted token whose revocation was acknowledged and accepts the
//     others.
//   - Report: one short text summary and a JSON document.
//
// TestChaos (chaos_test.go) wires these together; its knobs are environment
// variables described there.
package chaos
