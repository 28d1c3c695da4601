// Package cluster is the runtime of keymesh root servers: hashicorp/raft with
// a write-ahead log (raft-wal) and file snapshots, a Raft transport over
// mutual TLS 1.3, the HTTP API, forwarding of writes to the leader, and the
// bootstrap and join flows.
//
// # Life of a root server
//
// A server comes to life in one of three ways, each returning a *Server that
// is already serving and must be stopped with Shutdown:
//
//   - Bootstrap makes a new network: the AS root, the seal key, this server's
//     issuing intermediate, TLS certificate and admin credential, and a
//     one-time root-join token, then starts Raft as the single voter.
//   - Join contacts a running server over TLS pinned by the CA hash, spends a
//     root-join token, receives its issuing intermediate (signed by the AS
//     root) and the seal key, starts Raft and asks the leader to add it as a
//     voter.
//   - Open restarts a server from its data directory alone.
//
// # Writes
//
// Every change is an fsm command. Server.Propose applies it through Raft when
// this server leads and otherwise forwards the encoded command to the leader
// over mutual TLS (POST /v1/internal/apply), so a client may send any write to
// any server. A command is acknowledged only after the leader has committed
// and applied it; a follower that forwarded it waits until it has applied the
// same index itself, so a client reads its own writes from the server it
// wrote through.
//
// # Reads
//
// Reads are served from the local replica. A read that asks for consistency
// (?consistent=true) first learns the leader's applied index after the
// leader confirmed its leadership (the read-index scheme) and waits until the
// local replica has applied at least that much.
package cluster
