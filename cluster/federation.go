package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
)

// Federation's keys: a federated network's nodes sign their tokens and
// routes with their own keys, which only their roots know. As SPIFFE
// federation fetches a trust domain's bundle, the leader fetches the JWKS
// each federated network's roots publish (GET /.well-known/jwks.json, over
// TLS verified against the anchor's roots, from the first of its endpoints
// that answers), keeps the keys whose certificate chain reaches that
// anchor and names a node of that network, and writes the set into the
// anchor record when it changed. Agents get it with the trust state; their
// verifiers check each chain again at use. A key that network's roots
// revoke leaves their published JWKS, and so ours at the next fetch.

// errFederation is why a federated network's keys could not be fetched.
var errFederation = errors.New("cluster: federated keys")

// runFederation fetches the federated networks' keys on the leader, every
// FederationInterval.
func (s *Server) runFederation(ctx context.Context) error {
	tick := time.NewTicker(s.opts.FederationInterval)
	defer tick.Stop()
	failing := map[string]bool{} // networks whose last fetch failed, for logging changes only
	seen := map[string]fetched{} // what the last fetch of each network found
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if s.node.raft.State() != raft.Leader || s.readyTerm.Load() != s.node.raft.CurrentTerm() {
			continue
		}
		for _, a := range s.store.TrustAnchors() {
			if a.Network == s.network || len(a.Endpoints) == 0 {
				continue
			}
			f, err := s.followFederated(ctx, a, seen[a.Network])
			if err == nil {
				seen[a.Network] = f
			}
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil && !failing[a.Network]:
				s.log.Warn("federated network's keys not fetched; its nodes' new keys are refused until they are", "network", a.Network, "endpoints", a.Endpoints, "error", err)
			case err == nil && failing[a.Network]:
				s.log.Info("federated network's keys fetched again", "network", a.Network)
			}
			failing[a.Network] = err != nil
			s.metrics.federationFetch(a.Network, err)
		}
	}
}

// fetched is what a fetch found: the document's ETag, and the anchor's
// modify index it matches. A later fetch asks with If-None-Match while the
// anchor is unchanged since.
type fetched struct {
	etag   string
	modify uint64
}

// followFederated fetches a's keys (unless last's document is still the
// one published) and writes them when they changed.
func (s *Server) followFederated(ctx context.Context, a fsm.TrustAnchor, last fetched) (fetched, error) {
	etag := ""
	if last.modify == a.ModifyIndex {
		etag = last.etag
	}
	pool := x509.NewCertPool()
	var roots []*x509.Certificate
	for _, der := range a.Roots {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fetched{}, fmt.Errorf("%w: anchor of %s: %w", errFederation, a.Network, err)
		}
		roots = append(roots, c)
		pool.AddCert(c)
	}
	var doc []byte
	var errs []error
	answered := false
	for _, ep := range a.Endpoints {
		d, tag, err := fetchJWKS(ctx, ep, pool, etag, max(s.opts.FederationInterval, 2*time.Second))
		if err == nil {
			doc, etag, answered = d, tag, true
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	switch {
	case !answered:
		return fetched{}, fmt.Errorf("%w: no endpoint of %s answered: %w", errFederation, a.Network, errors.Join(errs...))
	case doc == nil:
		return last, nil // not modified since the last fetch
	}
	keys, err := FederatedKeys(doc, a.Network, roots, s.opts.Clock())
	if err != nil {
		return fetched{}, err
	}
	if slices.EqualFunc(keys, a.Keys, func(x, y fsm.FederatedKey) bool {
		return x.KID == y.KID && x.Node == y.Node && bytes.Equal(x.Key, y.Key)
	}) {
		return fetched{etag: etag, modify: a.ModifyIndex}, nil
	}
	next := a
	next.Keys = keys
	expect := a.ModifyIndex
	idx, err := s.Propose(ctx, fsm.MsgTrustAnchorPut, fsm.TrustAnchorPut{Anchor: next, ExpectModifyIndex: &expect})
	if err != nil {
		if errors.Is(err, fsm.ErrConflict) {
			return fetched{}, nil // the anchor changed meanwhile: the next tick reads it again
		}
		return fetched{}, err
	}
	s.log.Info("federated network's keys changed", "network", a.Network, "keys", len(keys), "before", len(a.Keys))
	return fetched{etag: etag, modify: idx}, nil
}

// fetchJWKS gets the JWKS endpoint publishes, over TLS verified against
// roots (the endpoint's host name or IP in its certificate), unless it is
// still the document of etag: then a nil document and etag again.
func fetchJWKS(ctx context.Context, endpoint string, roots *x509.CertPool, etag string, timeout time.Duration) ([]byte, string, error) {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return nil, "", err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+endpoint+"/.well-known/jwks.json", nil)
	if err != nil {
		return nil, "", err
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && etag != "":
		return nil, etag, nil
	case resp.StatusCode != http.StatusOK:
		return nil, "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	limit := int64(fsm.MaxFederatedKeys * fsm.MaxJWKLen)
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", err
	}
	if int64(len(body)) > limit {
		return nil, "", fmt.Errorf("a JWKS over %d bytes", limit)
	}
	return body, resp.Header.Get("ETag"), nil
}

// FederatedKeys turns a federated network's published JWKS into the keys
// of its nodes: each key's x5c chain must verify to roots at now and name
// a node of network (others are left out: a server's admin key, a key
// another network's CA certified). Sorted by kid.
func FederatedKeys(doc []byte, network string, roots []*x509.Certificate, now time.Time) ([]fsm.FederatedKey, error) {
	set, err := identity.DecodeJWKS(doc, identity.Limits{MaxKeys: fsm.MaxFederatedKeys, MaxBytes: fsm.MaxFederatedKeys * fsm.MaxJWKLen})
	if err != nil {
		return nil, fmt.Errorf("%w: the JWKS of %s: %w", errFederation, network, err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	var out []fsm.FederatedKey
	for _, j := range set.Keys {
		k, err := identity.KeyFromJWK(j)
		if err != nil {
			continue
		}
		id, err := ca.IdentityOf(k.Chain[0])
		if err != nil || id.Kind != ca.KindNode || id.Network != network {
			continue
		}
		inter := x509.NewCertPool()
		for _, c := range k.Chain[1:] {
			inter.AddCert(c)
		}
		if _, err := k.Chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			continue
		}
		raw, err := json.Marshal(j)
		if err != nil || len(raw) > fsm.MaxJWKLen {
			continue
		}
		out = append(out, fsm.FederatedKey{KID: k.KID, Node: id.Name, Key: raw})
	}
	slices.SortFunc(out, func(x, y fsm.FederatedKey) int { return strings.Compare(x.KID, y.KID) })
	return out, nil
}
