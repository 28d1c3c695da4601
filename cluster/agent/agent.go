package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/fsm"
)

// Files of a node's data directory.
const (
	fileNode  = "node.json"
	fileKey   = "node.key"
	fileCert  = "node.pem"
	fileRoots = "ca.pem"
)

// Errors of the node side.
var (
	// ErrNodeExists: the data directory already holds a node.
	ErrNodeExists = errors.New("agent: data directory already holds a node")
	// ErrNoNode: the data directory holds no node.
	ErrNoNode = errors.New("agent: data directory holds no node; register it with `keymesh node join`")
	// ErrDenied: an operator denied the registration.
	ErrDenied = errors.New("agent: registration denied")
	// ErrPending: the registration still waits for an operator.
	ErrPending = errors.New("agent: registration is pending approval")
)

// State is the content of node.json.
type State struct {
	Version        int       `json:"version"`
	Network        string    `json:"network"`
	NodeID         string    `json:"node_id"`
	Server         string    `json:"server"` // API address of the root server registered with
	CAHash         string    `json:"ca_hash"`
	RegistrationID string    `json:"registration_id"`
	Principal      string    `json:"principal,omitempty"` // as registered (the token's, the request's or NODE)
	Status         string    `json:"status"`              // pending, approved, denied
	Reason         string    `json:"reason,omitempty"`
	Requested      time.Time `json:"requested"`
}

// Paths of a node's files in dir.
func KeyPath(dir string) string   { return filepath.Join(dir, fileKey) }
func CertPath(dir string) string  { return filepath.Join(dir, fileCert) }
func RootsPath(dir string) string { return filepath.Join(dir, fileRoots) }

// JoinConfig describes a node registration.
type JoinConfig struct {
	Server    string // API address of any root server
	CAHash    string // sha256:... of the AS root, as `keymesh root bootstrap` prints it
	Network   string // the network to join (checked against the roots')
	NodeID    string
	DataDir   string
	Token     string   // node join token; empty: wait for approval
	Principal string   // optional; the token's or NODE by default
	DNSNames  []string // optional DNS SANs
	KeyType   ca.KeyType
	Clock     func() time.Time // nil: time.Now
}

// Result says where a registration stands.
type Result struct {
	State
	NotAfter time.Time // of the certificate, once approved
	// Dir is the membership's data directory: the one given, or
	// networks/NETWORK in it for a node's membership of another network.
	Dir string
}

// ReadState reads the node's state from its data directory, without the
// network.
func ReadState(dir string) (State, error) { return readState(dir) }

func readState(dir string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(dir, fileNode))
	if errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("%w (%s)", ErrNoNode, dir)
	}
	if err != nil {
		return st, fmt.Errorf("agent: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Version != 1 {
		return st, fmt.Errorf("agent: %s is damaged or of an unknown version", filepath.Join(dir, fileNode))
	}
	return st, nil
}

func writeState(dir string, st State) error {
	st.Version = 1
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, fileNode), append(b, '\n'), 0o644)
}

// writeFile writes atomically through a temporary file.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("agent: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("agent: write %s: %w", path, err)
	}
	return nil
}

// Join registers a new node. It returns the registration's state; with a
// token the certificate is in the data directory on return. On failure
// before the registration was accepted, the data directory is left as it
// was.
func Join(ctx context.Context, cfg JoinConfig) (res Result, err error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.KeyType == "" {
		cfg.KeyType = ca.KeyP384
	}
	if err := ca.ValidateName(cfg.NodeID); err != nil {
		return res, fmt.Errorf("--node-id: %w", err)
	}
	if err := ca.ValidateNetwork(cfg.Network); err != nil {
		return res, fmt.Errorf("--network: %w", err)
	}
	if _, err := ca.ParseHash(cfg.CAHash); err != nil {
		return res, fmt.Errorf("--ca-hash: %w", err)
	}
	networksDir := "" // networks/ when this join makes it
	if st, err := readState(cfg.DataDir); err == nil && st.Network != cfg.Network {
		// Another network's node: this membership takes a directory of
		// its own, with a key and certificate of its own.
		ms, err := Memberships(cfg.DataDir)
		if err != nil {
			return res, err
		}
		for _, m := range ms {
			if m.Network != cfg.Network && m.Exclusive() {
				return res, fmt.Errorf("%w: %s holds a node of %s, which does", ErrExclusive, cfg.DataDir, m.Network)
			}
		}
		if len(ms) > MaxMemberships && !slices.ContainsFunc(ms, func(m Membership) bool { return m.Network == cfg.Network }) {
			return res, fmt.Errorf("%w: %s holds %d memberships already, the most a node has", ErrTooManyMemberships, cfg.DataDir, len(ms))
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, dirNetworks)); errors.Is(err, fs.ErrNotExist) {
			networksDir = filepath.Join(cfg.DataDir, dirNetworks)
		}
		cfg.DataDir = filepath.Join(cfg.DataDir, dirNetworks, cfg.Network)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, fileNode)); err == nil {
		return res, fmt.Errorf("%w: %s; collect its certificate with `keymesh node join --resume --data-dir %s`", ErrNodeExists, cfg.DataDir, cfg.DataDir)
	}
	created := false
	if _, err := os.Stat(cfg.DataDir); errors.Is(err, fs.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return res, fmt.Errorf("agent: data directory: %w", err)
	}
	accepted := false
	defer func() {
		if err != nil && !accepted {
			for _, f := range []string{fileKey, fileCert, fileRoots, fileNode} {
				os.Remove(filepath.Join(cfg.DataDir, f))
			}
			if created {
				os.Remove(cfg.DataDir)
			}
			if networksDir != "" {
				os.Remove(networksDir)
			}
		}
	}()

	roots, err := fetchRoots(ctx, cfg.Server, cfg.CAHash, cfg.Network)
	if err != nil {
		return res, err
	}
	key, err := ca.GenerateKey(cfg.KeyType, nil)
	if err != nil {
		return res, err
	}
	csr, err := ca.NewCSR(key, ca.Identity{Network: cfg.Network, Kind: ca.KindNode, Name: cfg.NodeID}, cfg.DNSNames, nil)
	if err != nil {
		return res, err
	}
	if err := ca.WriteKeyFile(KeyPath(cfg.DataDir), key); err != nil {
		return res, err
	}
	if err := ca.WriteCertsFile(RootsPath(cfg.DataDir), roots...); err != nil {
		return res, err
	}
	cl, err := client.New(client.Config{Server: cfg.Server, CAPEM: ca.EncodeCertsPEM(roots...)})
	if err != nil {
		return res, err
	}
	defer cl.Close()
	resp, err := cl.Register(ctx, api.RegisterRequest{CSR: csr, NodeID: cfg.NodeID, Network: cfg.Network,
		Token: cfg.Token, Principal: cfg.Principal, DNSNames: cfg.DNSNames})
	if err != nil {
		return res, fmt.Errorf("agent: registration refused: %w", err)
	}
	accepted = true
	st := State{Network: cfg.Network, NodeID: cfg.NodeID, Server: cfg.Server, CAHash: cfg.CAHash,
		RegistrationID: resp.Registration.ID, Principal: resp.Registration.Principal, Status: resp.Registration.Status,
		Requested: cfg.Clock().UTC()}
	if err := writeState(cfg.DataDir, st); err != nil {
		return res, err
	}
	res, err = finish(cfg.DataDir, st, key, roots, resp)
	res.Dir = cfg.DataDir
	return res, err
}

// fetchRoots learns the AS root from the server at first contact, pinned by
// the CA hash, and checks that it is the root of network.
func fetchRoots(ctx context.Context, server, pin, network string) ([]*x509.Certificate, error) {
	cl, err := client.New(client.Config{Server: server, CAHash: pin})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	bundle, err := cl.Bundle(ctx)
	if err != nil {
		if errors.Is(err, ca.ErrNotRootServer) {
			return nil, fmt.Errorf("agent: %s is not a root server of the network: %w", server, err)
		}
		if errors.Is(err, ca.ErrHashMismatch) || errors.Is(err, ca.ErrChain) {
			return nil, fmt.Errorf("agent: the server's CA does not match --ca-hash; check the hash printed by `keymesh root bootstrap`: %w", err)
		}
		return nil, fmt.Errorf("agent: cannot reach %s (is a root server listening there?): %w", server, err)
	}
	certs, err := ca.ParseCertsPEM(bundle)
	if err != nil {
		return nil, fmt.Errorf("agent: CA bundle from %s: %w", server, err)
	}
	for _, c := range certs {
		if ca.MatchHash(c, pin) == nil {
			// The AS root is name-constrained to its network's URIs.
			if len(c.PermittedURIDomains) > 0 && !slices.Contains(c.PermittedURIDomains, network) {
				return nil, fmt.Errorf("agent: %s is a root of network %v, not %q", server, c.PermittedURIDomains, network)
			}
			return []*x509.Certificate{c}, nil
		}
	}
	return nil, errors.New("agent: the server's bundle holds no root matching --ca-hash")
}

// finish stores the outcome of a registration answer.
func finish(dir string, st State, key crypto.Signer, roots []*x509.Certificate, resp api.RegistrationResponse) (Result, error) {
	res := Result{State: st}
	res.Status, res.Reason = resp.Registration.Status, resp.Registration.Reason
	if p := resp.Registration.Principal; p != "" {
		st.Principal = p
	}
	switch res.Status {
	case fsm.RegistrationDenied:
		st.Status, st.Reason = res.Status, res.Reason
		writeState(dir, st)
		return res, fmt.Errorf("%w: %s", ErrDenied, orNone(res.Reason))
	case fsm.RegistrationPending:
		return res, nil
	}
	chain, err := checkChain(resp.Chain, key, roots, st)
	if err != nil {
		return res, err
	}
	if err := ca.WriteCertsFile(CertPath(dir), chain...); err != nil {
		return res, err
	}
	st.Status = fsm.RegistrationApproved
	res.State, res.NotAfter = st, chain[0].NotAfter
	if err := writeState(dir, st); err != nil {
		return res, err
	}
	// The gossip keyring comes over mutual TLS with the new certificate.
	// Best effort: the agent asks for it again at start.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = fetchKeyring(ctx, dir, st, roots)
	return res, nil
}

// fetchKeyring asks the root of st for the gossip keyring over mutual TLS
// with the node certificate and keeps it in gossip.keys.
func fetchKeyring(ctx context.Context, dir string, st State, roots []*x509.Certificate) error {
	cert, err := Certificate(dir)
	if err != nil {
		return err
	}
	cl, err := client.New(client.Config{Server: st.Server, CAPEM: ca.EncodeCertsPEM(roots...), Certificate: &cert})
	if err != nil {
		return err
	}
	defer cl.Close()
	kr, err := cl.GossipKeys(ctx, 0, 0)
	if err != nil {
		return err
	}
	return storeKeyring(dir, st.Network, kr)
}

// storeKeyring keeps kr in gossip.keys if it is newer than the one there.
func storeKeyring(dir, network string, kr api.GossipKeyring) error {
	k, _ := newKeyring(dir, network) // a damaged file is replaced
	_, err := k.set(kr, network)
	return err
}

func orNone(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

// checkChain verifies a certificate chain from the cluster: it is for our
// key and our node id and chains to our root.
func checkChain(der [][]byte, key crypto.Signer, roots []*x509.Certificate, st State) ([]*x509.Certificate, error) {
	if len(der) < 2 {
		return nil, errors.New("agent: the cluster sent no certificate chain")
	}
	var chain []*x509.Certificate
	for _, d := range der {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("agent: certificate from the cluster: %w", err)
		}
		chain = append(chain, c)
	}
	pub, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("agent: the cluster's certificate is for another key")
	}
	id, err := ca.IdentityOf(chain[0])
	if err != nil || id.Kind != ca.KindNode || id.Name != st.NodeID || id.Network != st.Network {
		return nil, fmt.Errorf("agent: the cluster's certificate names %v, not node %s of %s", id, st.NodeID, st.Network)
	}
	if err := ca.VerifyChain(chain[0], chain[1:], roots, x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
		return nil, fmt.Errorf("agent: the cluster's certificate does not chain to the AS root: %w", err)
	}
	return chain, nil
}

// load reads the node's state, key and roots.
func load(dir string) (State, crypto.Signer, []*x509.Certificate, error) {
	st, err := readState(dir)
	if err != nil {
		return st, nil, nil, err
	}
	key, err := ca.ReadKeyFile(KeyPath(dir))
	if err != nil {
		return st, nil, nil, err
	}
	roots, err := ca.ReadCertsFile(RootsPath(dir))
	if err != nil {
		return st, nil, nil, err
	}
	return st, key, roots, nil
}

// Collect asks once for the certificate of the node's registration, proving
// possession of the node key. A pending registration returns ErrPending.
func Collect(ctx context.Context, dir string, clock func() time.Time) (Result, error) {
	if clock == nil {
		clock = time.Now
	}
	st, key, roots, err := load(dir)
	if err != nil {
		return Result{}, err
	}
	if st.Status == fsm.RegistrationApproved {
		certs, err := ca.ReadCertsFile(CertPath(dir))
		if err == nil {
			return Result{State: st, NotAfter: certs[0].NotAfter, Dir: dir}, nil
		}
	}
	cl, err := client.New(client.Config{Server: st.Server, CAPEM: ca.EncodeCertsPEM(roots...)})
	if err != nil {
		return Result{}, err
	}
	defer cl.Close()
	now := clock().UTC().Format(time.RFC3339)
	sig, err := ca.SignPossession(key, nil, "collect", st.RegistrationID, now)
	if err != nil {
		return Result{}, err
	}
	resp, err := cl.Collect(ctx, st.RegistrationID, api.CollectRequest{Time: now, Signature: sig})
	if err != nil {
		return Result{State: st}, fmt.Errorf("agent: collecting registration %s: %w", st.RegistrationID, err)
	}
	res, err := finish(dir, st, key, roots, resp)
	res.Dir = dir
	if err == nil && res.Status == fsm.RegistrationPending {
		return res, ErrPending
	}
	return res, err
}

// Wait collects until the registration is approved or denied, or ctx ends.
// progress, when not nil, is called after each pending answer.
func Wait(ctx context.Context, dir string, every time.Duration, progress func(Result)) (Result, error) {
	for {
		res, err := Collect(ctx, dir, nil)
		if !errors.Is(err, ErrPending) {
			return res, err
		}
		if progress != nil {
			progress(res)
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, fmt.Errorf("%w: %w", ErrPending, ctx.Err())
		case <-t.C:
		}
	}
}

// Certificate returns the node's current TLS certificate (chain and key).
func Certificate(dir string) (tls.Certificate, error) {
	recoverRotation(dir)
	key, err := ca.ReadKeyFile(KeyPath(dir))
	if err != nil {
		return tls.Certificate{}, err
	}
	certs, err := ca.ReadCertsFile(CertPath(dir))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agent: no certificate yet (is the registration approved? `keymesh node join --resume`): %w", err)
	}
	c := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, cert := range certs {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c, nil
}

// Renew replaces the node certificate with a new one for the same key, over
// mutual TLS with the current certificate. The old one stays valid until it
// expires.
func Renew(ctx context.Context, dir string) (*x509.Certificate, error) { return RenewVia(ctx, dir, "") }

// RenewVia is Renew through server ("" is node.json's): a site that
// reaches the roots through a relay renews through it (--pin-servers).
func RenewVia(ctx context.Context, dir, server string) (*x509.Certificate, error) {
	st, key, roots, err := load(dir)
	if err != nil {
		return nil, err
	}
	cert, err := Certificate(dir)
	if err != nil {
		return nil, err
	}
	if server == "" {
		server = st.Server
	}
	cl, err := client.New(client.Config{Server: server, CAPEM: ca.EncodeCertsPEM(roots...), Certificate: &cert})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	csr, err := ca.NewCSR(key, ca.Identity{Network: st.Network, Kind: ca.KindNode, Name: st.NodeID}, cert.Leaf.DNSNames, nil)
	if err != nil {
		return nil, err
	}
	resp, err := cl.Renew(ctx, csr)
	if err != nil {
		return nil, fmt.Errorf("agent: renewal refused: %w", err)
	}
	chain, err := checkChain(resp.Chain, key, roots, st)
	if err != nil {
		return nil, err
	}
	if err := ca.WriteCertsFile(CertPath(dir), chain...); err != nil {
		return nil, err
	}
	if resp.Gossip != nil {
		// The keyring rides the renewal; a running agent follows it anyway.
		_ = storeKeyring(dir, st.Network, *resp.Gossip)
	}
	return chain[0], nil
}

// RenewAt is when a certificate should be renewed: two thirds into its
// lifetime.
func RenewAt(c *x509.Certificate) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(life * 2 / 3)
}
