//go:build linux || darwin || freebsd || netbsd || openbsd

package cluster

import (
	"errors"
	"net"
	"syscall"
)

// canPeek reports whether peerHasClosed can look at a socket here.
const canPeek = true

// peerHasClosed reports whether the peer of c has closed it or sent it
// bytes nobody asked for, by looking at the socket's receive queue without
// blocking and without taking from it: an end of stream, a reset, or data
// waiting. A connection it cannot look at counts as open.
func peerHasClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing waiting is an open connection; the end (n == 0), a reset
		// or unasked bytes (n > 0) are not.
		closed = !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EWOULDBLOCK)
		return true
	})
	return closed || err != nil
}
