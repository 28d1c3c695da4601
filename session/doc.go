// Package session is the peering protocol of the mesh: sessions between
// node agents over mutual TLS 1.3 (ALPN keymesh-peer/1), each side verifying
// the other's node certificate against the replicated trust view.
//
// A frame is an 8-byte header (magic "KM", version 1, message type, body
// length) and a body in canonical CBOR with integer keys; the maximum frame
// size is checked before a body is read. The messages are BGP's: OPEN (node
// id, network, hold time, capabilities, relationship, a token minted under
// the sender's node key, audience the receiver, bound to the sender's TLS
// certificate, and an optional pre-shared key's HMAC over the OPEN and the
// connection's exported keying material), KEEPALIVE, UPDATE (its payload
// belongs to the routing layer), NOTIFICATION and ROUTE-REFRESH.
//
// Machine is the session state machine (Idle, Connect, Active, OpenSent,
// OpenConfirm, Established) as a pure step function: events in, actions
// out, no clock or network of its own, so that scripts in testdata/fsm
// replay it with golden traces. Speaker runs it for every peer over real
// connections: it dials the configured peers, takes sessions on a listener,
// checks each OPEN (identity, role, token once, Cedar peer.connect, PSK),
// enforces the limits before OPEN (deadline, per-source rate, pending cap)
// and after (send queue, frame size), and ends every session whose peer
// the trust view revokes or whose certificate expires.
package session
