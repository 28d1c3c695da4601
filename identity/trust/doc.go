// Package trust is the replicated public trust state as verifiers see it:
// the trust anchors and access list, the JWKS, the nodes and root servers
// that own keys, the revocations, the route authorizations and the policy
// set. Root servers read it from their live replica (*fsm.Store is a
// View); node agents from the document they follow (a *State, kept up to
// date with Deltas). Everything that checks a credential against the
// trust state — token verifiers (Keys), certificate chains (CheckChain),
// trust anchors (Anchors), and from the next issues peering sessions,
// gossip and routes — takes a View, so that one code path serves both.
//
// # Sync
//
// A root answers a follower at index N with the Delta since N (DeltaFrom):
// the records of the trust tables that changed after N and the keys that
// were deleted, read at one consistent index; or with a full document (a
// Delta with Reset) when its change history no longer covers N, when N is
// 0, or when asked. A follower applies a Delta to its State with Apply,
// which returns a new State and leaves the old one as it was; a Delta
// whose Since is not the State's index does not apply (ErrGap), and the
// follower asks for a full document instead, never guessing.
//
// A State is immutable and safe for concurrent use. Its large tables are
// layered: a shared base and a small overlay of the changes since, merged
// when the overlay grows past an eighth of the base, so applying one
// revocation to a state that holds 100,000 costs no copy of the 100,000.
package trust
