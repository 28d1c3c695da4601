package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/ca"
)

// testPKI is an AS root with helpers to make root server and node
// identities under it.
type testPKI struct {
	t       *testing.T
	network string
	root    ca.Signer
	issuer  ca.Signer
}

func newTestPKI(t *testing.T, network string) *testPKI {
	t.Helper()
	now := time.Now()
	root, err := ca.NewRoot(network, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	ik, _ := ca.GenerateKey(ca.KeyP384, nil)
	ic, err := ca.SignIntermediate(root, ik.Public(), network, "issuer", now, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, network: network, root: root, issuer: ca.Signer{Cert: ic, Key: ik}}
}

func (p *testPKI) rootServer(name string, trust ...*testPKI) *tlsIdentity {
	p.t.Helper()
	k, _ := ca.GenerateKey(ca.KeyP384, nil)
	c, err := ca.SignServerTLS(p.issuer, k.Public(), p.network, name, []string{"127.0.0.1"}, time.Now(), nil)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.identity(tlsCertificate([]*x509.Certificate{c, p.issuer.Cert}, k), trust...)
}

func (p *testPKI) node(id string) *tlsIdentity {
	p.t.Helper()
	k, _ := ca.GenerateKey(ca.KeyP384, nil)
	c, err := ca.SignNode(p.issuer, ca.NodeRequest{PublicKey: k.Public(), Network: p.network, NodeID: id, DNSNames: []string{"localhost"}, Now: time.Now()}, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.identity(tlsCertificate([]*x509.Certificate{c, p.issuer.Cert}, k))
}

// identity trusts this PKI's root (and the roots of trust) for the network.
func (p *testPKI) identity(cert tls.Certificate, trust ...*testPKI) *tlsIdentity {
	roots := []*x509.Certificate{p.root.Cert}
	for _, o := range trust {
		roots = append(roots, o.root.Cert)
	}
	id, err := newTLSIdentity(p.network, cert, roots)
	if err != nil {
		p.t.Fatal(err)
	}
	return id
}

// serveOnce accepts one Raft stream connection and echoes what it reads.
func serveOnce(t *testing.T, id *tlsIdentity) (*streamLayer, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl := newStreamLayer(ln, "", id)
	t.Cleanup(func() { sl.Close() })
	done := make(chan error, 1)
	go func() {
		c, err := sl.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			done <- err
			return
		}
		_, err = c.Write(buf)
		done <- err
	}()
	return sl, done
}

func dialer(t *testing.T, id *tlsIdentity) *streamLayer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl := newStreamLayer(ln, "", id)
	t.Cleanup(func() { sl.Close() })
	return sl
}

// TestStreamLayerMutualTLS: two root servers of one network talk; a server
// with a certificate from another CA, and a node of the same network, are
// refused by the listener; a dialer refuses a listener of another CA.
func TestStreamLayerMutualTLS(t *testing.T) {
	pki := newTestPKI(t, "a.example")
	foreign := newTestPKI(t, "a.example") // same network name, another AS root

	t.Run("root to root", func(t *testing.T) {
		srv, done := serveOnce(t, pki.rootServer("r1"))
		c, err := dialer(t, pki.rootServer("r2")).Dial(raft.ServerAddress(srv.Addr().String()), 5*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q %v", buf, err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})

	refused := []struct {
		name   string
		client *tlsIdentity
		want   string
	}{
		// The foreign server trusts our root too, so only the listener's check stops it.
		{"certificate from another CA", foreign.rootServer("evil", pki), "certificate"},
		{"node certificate of the same network", pki.node("n1"), ""},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			srv, done := serveOnce(t, pki.rootServer("r1"))
			c, err := dialer(t, tc.client).Dial(raft.ServerAddress(srv.Addr().String()), 5*time.Second)
			if err == nil {
				// TLS 1.3: the client may finish before the server rejects it;
				// the refusal shows on the first exchange.
				c.Write([]byte("ping"))
				_, err = io.ReadFull(c, make([]byte, 4))
				c.Close()
			}
			if err == nil {
				t.Fatal("connection accepted")
			}
			serr := <-done
			if serr == nil {
				t.Fatal("listener accepted the peer")
			}
			if tc.want != "" && !strings.Contains(serr.Error(), tc.want) {
				t.Errorf("listener error %q does not mention %q", serr, tc.want)
			}
			if tc.want == "" && !errors.Is(serr, ErrPeerNotRoot) {
				t.Errorf("listener error %v, want ErrPeerNotRoot", serr)
			}
		})
	}

	t.Run("dialer refuses a listener of another CA", func(t *testing.T) {
		srv, _ := serveOnce(t, foreign.rootServer("evil", pki))
		_, err := dialer(t, pki.rootServer("r2")).Dial(raft.ServerAddress(srv.Addr().String()), 5*time.Second)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("dial to a foreign listener: %v", err)
		}
	})
}
