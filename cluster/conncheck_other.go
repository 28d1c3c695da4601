//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package cluster

import "net"

// canPeek reports whether peerHasClosed can look at a socket here.
const canPeek = false

// peerHasClosed cannot look at a socket's receive queue here: every
// connection counts as open, and a request on one the peer closed fails as
// it would without the check.
func peerHasClosed(net.Conn) bool { return false }
