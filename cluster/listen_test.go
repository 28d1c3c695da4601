package cluster

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestListenWaitsForAPortInUse: an address in use is tried again for
// bindPatience, so a port freed meanwhile is taken; one still held after
// it fails with EADDRINUSE; other errors fail at once.
func TestListenWaitsForAPortInUse(t *testing.T) {
	defer func(d time.Duration) { bindPatience = d }(bindPatience)
	bindPatience = 300 * time.Millisecond
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := held.Addr().String()
	if _, err := listenTCP(addr); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("a port held past the patience: %v, want EADDRINUSE", err)
	}
	bindPatience = time.Minute
	released := make(chan struct{})
	time.AfterFunc(100*time.Millisecond, func() { held.Close(); close(released) })
	ln, err := listenTCP(addr)
	if err != nil {
		t.Fatalf("a port freed within the patience: %v", err)
	}
	ln.Close()
	<-released
	start := time.Now()
	if _, err := listenTCP("127.0.0.1:99999"); err == nil || time.Since(start) > time.Second {
		t.Fatalf("a bad address: %v after %s, want an error at once", err, time.Since(start))
	}
}
