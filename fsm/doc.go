// Package fsm is keymesh's replicated state machine: the commands the root
// servers of a network agree on through Raft, the state they build from them
// (CA, issuers, root servers, nodes, issued certificates, JWKS, revocations,
// trust anchors, join tokens, registrations, the policy set and route
// authorizations), snapshots of that state, and the queries, the change feed
// and the blocking wait that readers use.
//
// The package is pure. It does no I/O of its own, reads no clock, draws no
// randomness, logs nothing and imports nothing of keymesh or of Raft; the
// cluster package wraps a Store in a raft.FSM adapter.
//
// # Wire format and versioning
//
// A command (one Raft log entry) is one type byte followed by a JSON
// envelope:
//
//	data[0]   MsgType
//	data[1:]  {"v":<uint16 payload version>,"ts":<unix nanoseconds>,"p":<payload object>}
//
// ts is the proposer's clock when it built the command; Apply uses it as
// "now" for every time check (join token expiry, revocation time, pruning,
// registration time). The payload of each type is the struct of the same
// name (MsgRevoke carries Revoke, and so on); Encode builds a command and
// Decode parses the framing.
//
// # Versioning: one rule
//
// What a command in a log means never changes: a replica that applies a
// recorded log reaches the same state, whatever build it runs.
// TestGoldenLog holds this: testdata/golden.log, every command type as the
// proposers of the first release build it (with their optional fields,
// and refusals; the types added since appended at its end), replays
// command by command to the same answers, the same state hash and the
// same snapshot bytes (testdata/golden.snapshot).
//
// A change of behaviour therefore comes in one of two ways:
//
//   - a new optional field whose absence means what the command meant
//     before (RegistrationCreate.Limits, RouteAuthPut.ExpectModifyIndex,
//     NodeCertRenew.Presented, PruneRevocations.Issuance are such); or
//   - a new payload version (CurrentVersion), when an existing field must
//     mean something else; Apply keeps applying the older versions as
//     they were.
//
// Either way proposers emit the new field or version only once every
// replica runs code that knows it: payload fields unknown to a replica are
// rejected (ErrInvalid), and so is a version newer than it knows
// (ErrVersion), while an upgraded replica applies them, and their states
// would differ. Operators upgrade every root server of a cluster before
// they use what an upgrade brings. A new command type follows the same
// rule; it may carry IgnoreUnknownFlag when older replicas may skip it
// (consumed, Result.Ignored, no change). Any other unknown type makes
// Apply panic, loudly: a replica that cannot apply the log must stop
// rather than diverge, and be upgraded (the habit of Consul's FSM). The
// numbers of types removed before the first release stay reserved and
// unknown.
//
// # Determinism rules
//
// Replicas that applied the same log have byte-identical snapshots and the
// same Hash (invariant 6). To keep it so, Apply:
//
//   - takes time only from the envelope and keeps times in UTC;
//   - never iterates a map where order shows (what it deletes or encodes
//     is sorted first);
//   - checks everything a command needs before changing anything, so a
//     rejected command changes nothing (a test and the fuzz targets check
//     that the hash stays the same);
//   - rejects each bad command the same way on every replica (the checks
//     depend only on the command and the state);
//   - still advances the index for a rejected or ignored command: the log
//     entry is consumed. Hash covers the state, not the index, so it does
//     not move for a rejection.
//
// Snapshots use their own canonical binary format (see snapshot.go for the
// layout and why it is not JSON). Records remember the index that created
// and last modified them; deletions leave tombstones (see Store.Changes for
// how long they are kept), both inside the hashed state.
//
// # Call order
//
//	s := fsm.New()                  // or Restore into it before anything else
//	res := s.Apply(index, data)     // one goroutine, strictly increasing indexes (Raft log order)
//	s.Snapshot() -> (*Snapshot).WriteTo(w) -> Release()
//	s.Restore(r)                    // replaces state and index; readers see either the old or the new state
//
// Queries (Servers, Node, Revoked, ...), Index, Hash, Changes and WaitIndex
// may be called from any goroutine at any time; they return copies. A
// reader that follows changes does:
//
//	idx := s.Index()
//	for {
//		if _, err := s.WaitIndex(ctx, idx); err != nil { return err } // blocks until something is applied
//		ch := s.Changes(idx)                                           // what changed after idx
//		... reread the keys in ch (everything if ch.Reset) ...
//		idx = ch.Index
//	}
//
// Proposers should build commands with Encode, which runs the checks that
// need no state, so that most bad input fails before it reaches the log.
package fsm
