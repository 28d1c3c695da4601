// Package session is the peering protocol of the mesh: framing, the OPEN,
// KEEPALIVE, UPDATE and NOTIFICATION messages, the session state machine and
// its limits. Peering sessions run over mutual TLS 1.3 between node agents;
// nothing but OPEN is accepted before a session is ESTABLISHED.
//
// The package is a placeholder until the peering issue lands; see
// docs/architecture.md.
package session
