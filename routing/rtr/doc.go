// Package rtr is an RPKI-to-Router cache (RFC 8210, and RFC 6810 for
// routers that speak only version 0) of the network's route
// authorizations: routers that no one here wrote (BIRD, FRR, GoBGP)
// validate the origins of the routes they hear against what the roots
// replicate.
//
// A Cache holds the VRPs (prefix, max length, origin AS) at a serial and
// the recent changes. Serials are Raft indexes: serial S is the route
// authorization table as it was at index S, so every root and agent of a
// network names the same data by the same serial, and a router may move
// between them. Follow keeps a Cache at a root's replicated state, Load
// at an agent's trust view. A Server speaks the protocol over TCP to
// each router: Reset and Serial Queries answered with Cache Response,
// prefixes and End of Data, Cache Reset when the history does not reach
// back to a router's serial, and a Serial Notify to every router at
// every change. The protocol machine has no I/O of its own and is tested
// by scripts with golden traces (testdata/machine).
//
// Limits: connections (DefaultMaxRouters), a PDU's size (DefaultMaxPDU),
// an idle deadline and a deadline for the rest of a PDU once it started,
// a write deadline; malformed PDUs are answered with an Error Report and
// the session is closed.
package rtr
