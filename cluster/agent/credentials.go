package agent

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/identity"
)

// nodeCreds are the node's key and certificate as of one reading of
// node.key and node.pem, with a Minter for them.
type nodeCreds struct {
	gen    uint64 // counts readings that changed something
	tls    tls.Certificate
	leaf   *x509.Certificate
	chain  []*x509.Certificate // leaf first, then its intermediates
	minter *identity.Minter
}

// credentials follows node.key and node.pem: a renewal replaces node.pem, a
// key rotation both files. Each use stats the two files (cheap beside a
// signature) and reads them again when either changed; a half-done rotation
// (a key that the certificate does not hold) keeps the previous pair.
type credentials struct {
	dir   string
	clock func() time.Time

	mu       sync.Mutex
	keyStat  os.FileInfo
	certStat os.FileInfo
	cur      *nodeCreds
}

func newCredentials(dir string, clock func() time.Time) *credentials {
	return &credentials{dir: dir, clock: clock}
}

// current returns the node's credentials, read again if the files changed.
// When the files cannot be read or do not fit together, the previous pair
// is kept (and the error returned only if there is none).
func (c *credentials) current() (*nodeCreds, error) {
	ks, kerr := os.Stat(KeyPath(c.dir))
	cs, cerr := os.Stat(CertPath(c.dir))
	c.mu.Lock()
	defer c.mu.Unlock()
	if kerr == nil && cerr == nil && c.cur != nil && sameFile(ks, c.keyStat) && sameFile(cs, c.certStat) {
		return c.cur, nil
	}
	next, err := c.load()
	if err != nil {
		if c.cur != nil {
			return c.cur, nil
		}
		return nil, err
	}
	if kerr == nil && cerr == nil {
		c.keyStat, c.certStat = ks, cs
	}
	if c.cur != nil && next.leaf.Equal(c.cur.leaf) {
		return c.cur, nil
	}
	if c.cur != nil {
		next.gen = c.cur.gen + 1
	}
	c.cur = next
	return next, nil
}

// sameFile reports whether a and b are the same unchanged file.
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

func (c *credentials) load() (*nodeCreds, error) {
	key, err := ca.ReadKeyFile(KeyPath(c.dir))
	if err != nil {
		return nil, err
	}
	certs, err := ca.ReadCertsFile(CertPath(c.dir))
	if err != nil {
		return nil, fmt.Errorf("agent: no certificate yet (is the registration approved? `keymesh node join --resume`): %w", err)
	}
	m, err := identity.NewMinter(identity.MinterConfig{Key: key, Cert: certs[0], Chain: certs[1:], Clock: c.clock})
	if err != nil {
		return nil, fmt.Errorf("agent: %s and %s do not fit together (a rotation in progress?): %w", KeyPath(c.dir), CertPath(c.dir), err)
	}
	n := &nodeCreds{leaf: certs[0], chain: certs, minter: m, tls: tls.Certificate{PrivateKey: key, Leaf: certs[0]}}
	for _, cert := range certs {
		n.tls.Certificate = append(n.tls.Certificate, cert.Raw)
	}
	return n, nil
}
