// Package gossip is the authenticated membership of a network's node
// agents and the spreading of root-signed revocation bulletins, over
// hashicorp/memberlist.
//
// A member's memberlist meta is its Proof: a statement of its node id,
// network and gossip address at a time, signed by its node key. The alive
// and merge delegates refuse a member whose proof does not verify against
// the trust view (the key is the node's, not revoked, of a network on the
// access list), so only authenticated members enter the node graph; the
// gossip key (memberlist's keyring) and the Label, the network's name,
// keep other networks and outsiders out of the traffic itself.
//
// A Bulletin is a batch of revocations the leader's root server signs with
// its issuing key. Members pass bulletins on; each checks the issuer's
// chain to the network's AS root and the signature, drops what is unsigned,
// wrongly signed, of another network, stale or already applied, silently
// (counted), and hands the rest to the agent, which applies them at once
// ahead of its trust sync.
package gossip
