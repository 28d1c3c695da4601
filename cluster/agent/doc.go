// Package agent is the node side of keymesh: registration with the root
// servers, collection of a pending registration, and renewal of the node
// certificate.
//
// # Data directory
//
// A node keeps node.json (who it is and where its roots are), node.key (its
// private key, 0600, never sent anywhere), node.pem (its certificate chain)
// and ca.pem (the AS root, learnt at first contact pinned by the CA hash).
//
// # Order of calls
//
// Join makes the key and the CSR and registers. With a join token it comes
// back with a certificate; without one the registration is pending and
// Collect (or Wait) fetches the certificate once an operator approved it,
// after a restart too. Renew, or a Renewer running in the agent, replaces
// the certificate at two thirds of its lifetime over mutual TLS; RotateKey
// replaces key and certificate (the old kid retires).
//
// # The agent at run time
//
// New(RunConfig) loads the persisted trust state (trust.json), so a
// restarted agent verifies and mints offline at once; it opens nothing.
// Run then listens on agent.sock (0600; minting only there) and optionally
// on a loopback TCP address (no minting), and runs its parts as one
// cluster/run Group until ctx ends or one fails: the follower (blocking
// queries on /v1/trust that answer the changes since its index, applied
// to its copy, a full state after a gap; failing over between roots;
// persisting each new state), the local API on each listener, and the
// stop of a revoked agent. The Renewer (and later sessions and gossip) are
// components of their own, run beside the agent by cmd/keymesh.
// LocalClient talks to a running agent.
package agent
