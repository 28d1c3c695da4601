package cluster

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
)

// Validity of the certificates a root server makes for itself.
const (
	serverCertValidity = 365 * 24 * time.Hour
	adminCertValidity  = 365 * 24 * time.Hour
	rootTokenTTL       = 24 * time.Hour
)

// BootstrapConfig describes the first root server of a new network.
type BootstrapConfig struct {
	Network  string // network name, a hostname like mainnet.example.net
	Name     string // this server's name, its Raft id
	DataDir  string // must be empty or absent
	RaftAddr string // host:port for Raft; port 0 picks a free one
	APIAddr  string // host:port for the HTTPS API; port 0 picks a free one
	// RaftAdvertise is the address other servers dial for Raft when it is
	// not RaftAddr (a proxy or NAT in front). Optional; no port 0.
	RaftAdvertise string
	// ASN is the network's AS number, put in its CA record by the genesis
	// (fsm.CheckASN must take it). Optional: 0 sets none, and `keymesh
	// network set-asn` sets one later.
	ASN     uint32
	Options Options
}

// BootstrapResult is what the operator needs to grow the cluster.
type BootstrapResult struct {
	CAHash         string // sha256:<hex of the AS root's SubjectPublicKeyInfo>
	RootJoinToken  string // one-time root-join token, valid 24h
	CredentialPath string // admin credential (client certificate and key)
	RootsPath      string // AS root certificate in PEM
	AdminTokenPath string // system admin token (bearer), valid 24h
}

// Bootstrap prepares a new network and its first root server, which Run
// starts as the single Raft voter; it starts nothing itself. Run's first
// act is to commit the network's first state as one command (genesis);
// the server is ready after it. If Bootstrap, or Run before the server is
// ready, fails, nothing is left in DataDir.
func Bootstrap(cfg BootstrapConfig) (srv *Server, res *BootstrapResult, err error) {
	o := cfg.Options.withDefaults()
	if err := o.validate(); err != nil {
		return nil, nil, err
	}
	if err := ca.ValidateNetwork(cfg.Network); err != nil {
		return nil, nil, fmt.Errorf("--network: %w", err)
	}
	if err := ca.ValidateName(cfg.Name); err != nil {
		return nil, nil, fmt.Errorf("--name: %w", err)
	}
	if err := validateAddr("--raft-addr", cfg.RaftAddr); err != nil {
		return nil, nil, err
	}
	if err := validateAddr("--api-addr", cfg.APIAddr); err != nil {
		return nil, nil, err
	}
	if err := validateAdvertise(cfg.RaftAdvertise); err != nil {
		return nil, nil, err
	}
	if cfg.ASN != 0 {
		if err := fsm.CheckASN(cfg.ASN); err != nil {
			return nil, nil, fmt.Errorf("--asn: %w (give the network's own AS; private AS numbers are 64512-65534 and 4200000000-4294967294)", err)
		}
	}
	dir := dataDir(cfg.DataDir)
	cleanup, err := dir.prepare()
	if err != nil {
		return nil, nil, err
	}
	raftLn, apiLn, err := listen(cfg.RaftAddr, cfg.APIAddr)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			raftLn.Close()
			apiLn.Close()
			cleanup()
		}
	}()
	now := o.Clock()
	sf := serverFile{Name: cfg.Name, Network: cfg.Network, RaftAddr: raftLn.Addr().String(), RaftAdvertise: cfg.RaftAdvertise, APIAddr: apiLn.Addr().String()}

	root, err := ca.NewRoot(cfg.Network, now, nil)
	if err != nil {
		return nil, nil, err
	}
	sealKey, err := ca.NewSealKey(nil)
	if err != nil {
		return nil, nil, err
	}
	sealed, err := ca.SealSigner(sealKey, root.Key, cfg.Network, nil)
	if err != nil {
		return nil, nil, err
	}
	issuerKey, err := ca.GenerateKey(o.IssuerKeyType, nil)
	if err != nil {
		return nil, nil, err
	}
	issuerCert, err := ca.SignIntermediate(root, issuerKey.Public(), cfg.Network, cfg.Name, now, nil)
	if err != nil {
		return nil, nil, err
	}
	m, err := selfIssue(sf, ca.Signer{Cert: issuerCert, Key: issuerKey}, []*x509.Certificate{root.Cert}, sealKey, now)
	if err != nil {
		return nil, nil, err
	}
	if err := dir.writeMaterial(m); err != nil {
		return nil, nil, err
	}
	srv, err = newServer(dir, sf, m, o)
	if err != nil {
		return nil, nil, err
	}
	secret, tok, err := srv.newJoinToken(api.CreateJoinTokenRequest{Kind: "root", TTL: rootTokenTTL.String(), Description: "bootstrap root-join token"})
	if err != nil {
		return nil, nil, err
	}
	adminKey, err := adminJWK(m, cfg.Name)
	if err != nil {
		return nil, nil, err
	}
	adminToken, err := mintAdminToken(m, cfg.Network, o.Clock, adminTokenTTL)
	if err != nil {
		return nil, nil, err
	}
	// The network gossips encrypted from its first state on.
	gossipKey, err := srv.newGossipKey(fsm.GossipKeyPrimary, o.Clock(), 0)
	if err != nil {
		return nil, nil, err
	}
	genesis := fsm.Genesis{
		CA: fsm.CA{Network: cfg.Network, Active: root.Cert.Raw, SealedKey: sealed,
			GossipKeys: []fsm.GossipKey{gossipKey}, ASN: cfg.ASN},
		Issuer: &fsm.Issuer{ID: cfg.Name, Network: cfg.Network, Cert: issuerCert.Raw, Status: fsm.IssuerActive},
		Server: &fsm.Server{Name: cfg.Name, RaftAddr: sf.advertise(), APIAddr: sf.APIAddr, Status: fsm.ServerVoter},
		Anchor: &fsm.TrustAnchor{Network: cfg.Network, Roots: [][]byte{root.Cert.Raw}, Accept: []string{cfg.Network}},
		Token:  &tok,
		Key:    adminKey,
	}
	srv.raftLn, srv.apiLn, srv.bootstrap, srv.cleanup = raftLn, apiLn, true, cleanup
	srv.settle = func(ctx context.Context) error {
		if err := srv.waitLeader(ctx); err != nil {
			return err
		}
		if _, err := srv.Propose(ctx, fsm.MsgGenesis, genesis); err != nil {
			return fmt.Errorf("cluster: bootstrap: the network's first state: %w", err)
		}
		if err := writeFileAtomic(dir.path(fileAdminToken), []byte(adminToken+"\n"), 0o600); err != nil {
			return err
		}
		// Last: a data directory with server.json is a server that Open
		// can restart.
		if err := dir.writeServer(sf); err != nil {
			return err
		}
		srv.log.Info("bootstrapped network", "network", cfg.Network, "raft_addr", sf.RaftAddr, "api_addr", sf.APIAddr, "ca_hash", ca.Hash(root.Cert), "asn", cfg.ASN)
		return nil
	}
	return srv, &BootstrapResult{
		CAHash: ca.Hash(root.Cert), RootJoinToken: secret,
		CredentialPath: CredentialPath(cfg.DataDir), RootsPath: RootsPath(cfg.DataDir),
		AdminTokenPath: AdminTokenPath(cfg.DataDir),
	}, nil
}

// adminTokenTTL is the lifetime of the system admin token of a bootstrap;
// later ones are minted from the admin credential as needed.
const adminTokenTTL = 24 * time.Hour

// adminJWK is the admin credential's key as a JWKS entry owned by the
// server named server.
func adminJWK(m material, server string) (*fsm.JWK, error) {
	key, err := nodeJWK([]*x509.Certificate{m.admin.Cert, m.issuer.Cert})
	if err != nil {
		return nil, err
	}
	key.Node = server
	return key, nil
}

// publishAdminKey puts the admin credential's key in the JWKS, owned by
// this server, so that tokens minted with it verify everywhere.
func (s *Server) publishAdminKey(ctx context.Context, m material) error {
	key, err := adminJWK(m, s.name)
	if err != nil {
		return err
	}
	if _, err := s.Propose(ctx, fsm.MsgJWKPut, fsm.JWKPut{Key: *key}); err != nil {
		return fmt.Errorf("cluster: publish the admin key: %w", err)
	}
	return nil
}

// mintAdminToken mints an ADMIN token for the root API with the admin
// credential.
func mintAdminToken(m material, network string, clock func() time.Time, ttl time.Duration) (string, error) {
	mt, err := identity.NewMinter(identity.MinterConfig{Key: m.admin.Key, Cert: m.admin.Cert,
		Chain: []*x509.Certificate{m.admin.Cert, m.issuer.Cert}, Clock: clock, MaxTTL: ttl,
		Principals: []identity.Principal{identity.PrincipalAdmin}})
	if err != nil {
		return "", err
	}
	tok, _, err := mt.Mint(identity.MintRequest{Audience: []string{api.Audience(network)}, TTL: ttl, Principal: identity.PrincipalAdmin})
	return tok, err
}

// selfIssue makes the server's own TLS certificate and admin credential
// under its issuing intermediate.
func selfIssue(sf serverFile, issuer ca.Signer, roots []*x509.Certificate, sealKey []byte, now time.Time) (material, error) {
	m := material{roots: roots, sealKey: sealKey, issuer: issuer}
	hosts := hostsOf(sf.RaftAddr, sf.advertise(), sf.APIAddr)
	tlsKey, err := ca.GenerateKey(ca.KeyP384, nil)
	if err != nil {
		return m, err
	}
	tlsCert, err := ca.SignServerTLS(issuer, tlsKey.Public(), sf.Network, sf.Name, hosts, now, nil)
	if err != nil {
		return m, err
	}
	// The chain carries the AS root too: a joining server has only the CA
	// hash at first contact and finds the root it pins in this chain.
	m.tlsCert = tlsCertificate([]*x509.Certificate{tlsCert, issuer.Cert, roots[0]}, tlsKey)
	adminKey, err := ca.GenerateKey(ca.KeyP384, nil)
	if err != nil {
		return m, err
	}
	adminCert, err := ca.SignAdmin(issuer, adminKey.Public(), sf.Network, sf.Name, adminCertValidity, now, nil)
	if err != nil {
		return m, err
	}
	m.credential, err = credentialPEM([]*x509.Certificate{adminCert, issuer.Cert}, adminKey)
	m.admin = ca.Signer{Cert: adminCert, Key: adminKey}
	return m, err
}

func hostsOf(addrs ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range addrs {
		h, _, err := net.SplitHostPort(a)
		if err == nil && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// waitLeader blocks until some server leads, at most 30 s.
func (s *Server) waitLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s.WaitLeader(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrNoLeader, err)
	}
	return nil
}

// WaitLeader blocks until this server knows a leader and returns its
// name, woken by Raft's leader observations (no polling); or until ctx
// ends.
func (s *Server) WaitLeader(ctx context.Context) (string, error) {
	return s.waitLeaderWhere(ctx, func(string) bool { return true })
}

// waitLeaderWhere is WaitLeader until the leader known here satisfies ok.
func (s *Server) waitLeaderWhere(ctx context.Context, ok func(name string) bool) (string, error) {
	ch := make(chan raft.Observation, 8)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.node.raft.RegisterObserver(obs)
	defer s.node.raft.DeregisterObserver(obs)
	for {
		if _, id := s.node.raft.LeaderWithID(); id != "" && ok(string(id)) {
			return string(id), nil
		}
		select {
		case <-ch:
		case <-s.stop:
			return "", ErrShutdown
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// JoinConfig describes a new root server joining an existing network.
type JoinConfig struct {
	Join     string // API address of any running root server
	Token    string // root-join token from `keymesh root token` (or bootstrap)
	CAHash   string // sha256:... pin of the AS root, printed by bootstrap
	Name     string
	DataDir  string
	RaftAddr string
	APIAddr  string
	// RaftAdvertise: as in BootstrapConfig.
	RaftAdvertise string
	// SealKey, when set, is the network's seal key provided by the operator;
	// otherwise it travels inside the pinned, token-authenticated exchange.
	SealKey []byte
	Options Options
}

// ErrPinMismatch is returned when the server contacted for a join does not
// present the AS root named by the CA hash.
var ErrPinMismatch = errors.New("cluster: the server's CA does not match --ca-hash; check the hash printed by `keymesh root bootstrap`")

// Join has a new root server admitted into a running network (the one
// exchange with the server at cfg.Join: the token for an issuing
// certificate and the seal key) and prepares it; Run starts it, makes it a
// voter and publishes its admin key, and the server is ready after that.
// If Join, or Run before the server is ready, fails, nothing is left in
// DataDir.
func Join(ctx context.Context, cfg JoinConfig) (srv *Server, err error) {
	o := cfg.Options.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := ca.ValidateName(cfg.Name); err != nil {
		return nil, fmt.Errorf("--name: %w", err)
	}
	if _, err := ca.ParseHash(cfg.CAHash); err != nil {
		return nil, fmt.Errorf("--ca-hash: %w", err)
	}
	if cfg.Token == "" {
		return nil, errors.New("--token is required: make one with `keymesh root token` on a running server")
	}
	for _, a := range []struct{ flag, addr string }{{"--join", cfg.Join}, {"--raft-addr", cfg.RaftAddr}, {"--api-addr", cfg.APIAddr}} {
		if err := validateAddr(a.flag, a.addr); err != nil {
			return nil, err
		}
	}
	if err := validateAdvertise(cfg.RaftAdvertise); err != nil {
		return nil, err
	}
	dir := dataDir(cfg.DataDir)
	cleanup, err := dir.prepare()
	if err != nil {
		return nil, err
	}
	raftLn, apiLn, err := listen(cfg.RaftAddr, cfg.APIAddr)
	if err != nil {
		cleanup()
		return nil, err
	}
	defer func() {
		if err != nil {
			raftLn.Close()
			apiLn.Close()
			cleanup()
		}
	}()
	sf := serverFile{Name: cfg.Name, RaftAddr: raftLn.Addr().String(), RaftAdvertise: cfg.RaftAdvertise, APIAddr: apiLn.Addr().String(), JoinAddr: cfg.Join}
	issuerKey, err := ca.GenerateKey(o.IssuerKeyType, nil)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(issuerKey.Public())
	if err != nil {
		return nil, err
	}
	resp, pinned, err := requestJoin(ctx, cfg, o, api.JoinRequest{
		Token: cfg.Token, Name: cfg.Name, RaftAddr: sf.advertise(), APIAddr: sf.APIAddr,
		IssuerKey: pubDER, WantSealKey: cfg.SealKey == nil,
	})
	if err != nil {
		return nil, err
	}
	sf.Network = resp.Network
	issuerCert, sealKey, err := checkJoinResponse(resp, pinned, issuerKey, cfg, o.Clock())
	if err != nil {
		return nil, err
	}
	m, err := selfIssue(sf, ca.Signer{Cert: issuerCert, Key: issuerKey}, []*x509.Certificate{pinned}, sealKey, o.Clock())
	if err != nil {
		return nil, err
	}
	if err := dir.writeMaterial(m); err != nil {
		return nil, err
	}
	srv, err = newServer(dir, sf, m, o)
	if err != nil {
		return nil, err
	}
	srv.raftLn, srv.apiLn, srv.cleanup = raftLn, apiLn, cleanup
	srv.settle = func(ctx context.Context) error {
		// First: a server stopped while becoming a voter is restarted by
		// Open, which finishes the join.
		if err := dir.writeServer(sf); err != nil {
			return err
		}
		if err := srv.becomeVoter(ctx); err != nil {
			return err
		}
		if err := srv.publishAdminKey(ctx, m); err != nil {
			return err
		}
		srv.log.Info("joined network", "network", sf.Network, "raft_addr", sf.RaftAddr, "api_addr", sf.APIAddr)
		return nil
	}
	return srv, nil
}

// requestJoin posts the join request over TLS pinned by the CA hash. It
// returns the pinned AS root.
func requestJoin(ctx context.Context, cfg JoinConfig, o Options, req api.JoinRequest) (*api.JoinResponse, *x509.Certificate, error) {
	host, _, _ := net.SplitHostPort(cfg.Join)
	// First contact: the joiner knows the AS root only by its hash.
	tlsCfg, err := ca.PinnedTLSConfig(cfg.CAHash, host, o.Clock)
	if err != nil {
		return nil, nil, fmt.Errorf("--ca-hash: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+cfg.Join+"/v1/cluster/join", bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := client.Do(hreq)
	if err != nil {
		if errors.Is(err, ca.ErrNotRootServer) {
			return nil, nil, fmt.Errorf("cluster: %s is not a root server of the network; the token was not sent: %w", cfg.Join, err)
		}
		if errors.Is(err, ca.ErrHashMismatch) || errors.Is(err, ca.ErrChain) {
			return nil, nil, fmt.Errorf("%w (%w)", ErrPinMismatch, err)
		}
		return nil, nil, fmt.Errorf("cluster: cannot reach %s to join: %w (is a root server listening there?)", cfg.Join, err)
	}
	defer hresp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: reading the join answer: %w", err)
	}
	if hresp.StatusCode != http.StatusOK {
		var eb api.ErrorEnvelope
		if json.Unmarshal(b, &eb) == nil && eb.Error.Message != "" {
			return nil, nil, &api.APIError{Status: hresp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return nil, nil, fmt.Errorf("cluster: join refused: %s", hresp.Status)
	}
	var resp api.JoinResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, nil, fmt.Errorf("cluster: join answer: %w", err)
	}
	// The handshake proved the server chains to a root with the pinned
	// hash; the root the answer names must be that root.
	if len(resp.Roots) == 0 {
		return nil, nil, fmt.Errorf("%w: the join answer names no root", ErrPinMismatch)
	}
	pinned, err := x509.ParseCertificate(resp.Roots[0])
	if err != nil || ca.MatchHash(pinned, cfg.CAHash) != nil {
		return nil, nil, fmt.Errorf("%w: the join answer names another root", ErrPinMismatch)
	}
	return &resp, pinned, nil
}

// checkJoinResponse verifies what the cluster sent: the root is the pinned
// one, the intermediate is ours and chains to it, and the seal key opens the
// sealed AS root key.
func checkJoinResponse(resp *api.JoinResponse, pinned *x509.Certificate, issuerKey crypto.Signer, cfg JoinConfig, now time.Time) (*x509.Certificate, []byte, error) {
	cert, err := x509.ParseCertificate(resp.IssuerCert)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: issuing certificate from the cluster: %w", err)
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(issuerKey.Public()) {
		return nil, nil, errors.New("cluster: the cluster signed an issuing certificate for another key")
	}
	if err := cert.CheckSignatureFrom(pinned); err != nil || !cert.IsCA || now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, nil, fmt.Errorf("cluster: the issuing certificate from the cluster is not a valid CA under the AS root (%v)", err)
	}
	if id, err := ca.IdentityOf(cert); err != nil || id.Kind != ca.KindRoot || id.Name != cfg.Name || id.Network != resp.Network {
		return nil, nil, fmt.Errorf("cluster: the issuing certificate from the cluster names %v, not root server %q", id, cfg.Name)
	}
	sealKey := cfg.SealKey
	if sealKey == nil {
		sealKey = resp.SealKey
	}
	rootKey, err := ca.OpenSigner(sealKey, resp.SealedRoot, resp.Network)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: the seal key does not open the network's AS root key (wrong --seal-key-file?): %w", err)
	}
	if k, ok := rootKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pinned.PublicKey) {
		return nil, nil, errors.New("cluster: the sealed AS root key does not match the AS root certificate")
	}
	return cert, sealKey, nil
}

// becomeVoter asks the leader (through the join address or any known
// server) to add this server as a voter, and waits until it is one and has
// caught up with the cluster's state.
func (s *Server) becomeVoter(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if s.isVoter() {
			if rec, ok := s.store.Server(s.name); ok && rec.Status == "voter" {
				return nil
			}
		} else {
			for _, addr := range s.knownAPIs() {
				retry, err := s.leaderCall(ctx, addr, "/v1/internal/add-voter", addVoterRequest{Name: s.name, RaftAddr: s.raftAddr}, &struct{}{})
				if err == nil {
					break
				}
				var ae *api.APIError
				if errors.As(err, &ae) && ae.Status < 500 && !retry {
					return fmt.Errorf("cluster: becoming a voter: %w", err)
				}
			}
		}
		if err := s.pause(ctx); err != nil {
			return fmt.Errorf("cluster: not a voter yet (is the cluster's leader reachable?): %w", err)
		}
	}
}

// isVoter reports whether this server is a voter in its latest Raft
// configuration.
func (s *Server) isVoter() bool {
	f := s.node.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == s.name && srv.Suffrage == raft.Voter {
			return true
		}
	}
	return false
}

// knownAPIs lists API addresses to ask: the join address, then every server
// in the replicated state.
func (s *Server) knownAPIs() []string {
	var out []string
	if s.joinAddr != "" {
		out = append(out, s.joinAddr)
	}
	for _, srv := range s.store.Servers() {
		if srv.Name != s.name && srv.APIAddr != s.joinAddr {
			out = append(out, srv.APIAddr)
		}
	}
	return out
}

// Open prepares a root server's restart from its data directory alone;
// Run starts it. A server whose join stopped before it became a voter
// finishes the join while it runs.
func Open(dir string, opts Options) (*Server, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	d := dataDir(dir)
	sf, m, err := d.load()
	if err != nil {
		return nil, err
	}
	raftLn, apiLn, err := listen(sf.RaftAddr, sf.APIAddr)
	if err != nil {
		return nil, err
	}
	srv, err := newServer(d, sf, m, o)
	if err != nil {
		raftLn.Close()
		apiLn.Close()
		return nil, err
	}
	srv.raftLn, srv.apiLn = raftLn, apiLn
	srv.settle = func(context.Context) error {
		srv.log.Info("started", "network", sf.Network, "raft_addr", sf.RaftAddr, "api_addr", sf.APIAddr)
		return nil
	}
	srv.finishJoin = sf.JoinAddr != ""
	return srv, nil
}
