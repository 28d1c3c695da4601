package harness

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/identity/trust"
)

// NodeIdentity is a node registered in-process: its id and its TLS
// credential (certificate chain and key), as a node's data directory holds
// them.
type NodeIdentity struct {
	ID  string
	TLS tls.Certificate
}

// RegisterNodes registers n nodes (prefix-1 … prefix-n) with one node join
// token of n uses, spread over the running roots, a few at a time; every
// registration is approved at once. The roots' --registration-rate must
// allow n registrations from 127.0.0.1.
func (c *Cluster) RegisterNodes(ctx context.Context, prefix string, n int) []NodeIdentity {
	c.t.Helper()
	var tok api.CreatedJoinToken
	c.Retry(ctx, "create a node join token", func(cl *client.Client) error {
		var err error
		tok, err = cl.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", Uses: n, TTL: "1h", Description: prefix + " nodes"})
		return err
	})
	roots := c.Running()
	var clients []*client.Client
	for _, r := range roots {
		cl, err := client.New(client.Config{Server: r.APIAddr, CAFile: c.CAFile(), Timeout: 30 * time.Second})
		if err != nil {
			c.t.Fatal(err)
		}
		defer cl.Close()
		clients = append(clients, cl)
	}
	out := make([]NodeIdentity, n)
	errs := make(chan error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, err := register(ctx, clients[i%len(clients)], fmt.Sprintf("%s-%d", prefix, i+1), tok.Secret)
				if err != nil {
					errs <- err
					continue
				}
				out[i] = id
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		c.t.Fatalf("registering %d nodes: %v", n, err)
	}
	return out
}

func register(ctx context.Context, cl *client.Client, id, token string) (NodeIdentity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return NodeIdentity{}, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, key)
	if err != nil {
		return NodeIdentity{}, err
	}
	resp, err := cl.Register(ctx, api.RegisterRequest{CSR: csr, NodeID: id, Token: token})
	if err != nil {
		return NodeIdentity{}, fmt.Errorf("node %s: %w", id, err)
	}
	if len(resp.Chain) == 0 {
		return NodeIdentity{}, fmt.Errorf("node %s: registration %s is %s, without a certificate", id, resp.Registration.ID, resp.Registration.Status)
	}
	leaf, err := x509.ParseCertificate(resp.Chain[0])
	if err != nil {
		return NodeIdentity{}, err
	}
	return NodeIdentity{ID: id, TLS: tls.Certificate{Certificate: resp.Chain, PrivateKey: key, Leaf: leaf}}, nil
}

// Follower makes the trust follower a node agent runs (agent.Follower,
// unchanged) for node n, with dir for its trust.json, over HTTPS with the
// node's certificate, starting with root start%len and failing over to the
// others. cfg's DataDir, Network, Servers and Dial are set here.
func (c *Cluster) Follower(n NodeIdentity, dir string, start int, cfg agent.FollowerConfig) (*agent.Follower, error) {
	var servers []string
	for _, r := range c.Roots {
		servers = append(servers, r.APIAddr)
	}
	k := start % len(servers)
	servers = append(servers[k:], servers[:k]...)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caFile := c.CAFile()
	cfg.DataDir, cfg.Network, cfg.Servers = dir, c.Network, slices.Clone(servers)
	cfg.Dial = func(server string) (agent.TrustSource, error) {
		cert := n.TLS
		cl, err := client.New(client.Config{Server: server, CAFile: caFile, Certificate: &cert, Timeout: 10 * time.Second})
		if err != nil {
			return nil, err
		}
		return nodeSource{cl}, nil
	}
	return agent.NewFollower(cfg)
}

// nodeSource is a root server as a follower's TrustSource.
type nodeSource struct{ cl *client.Client }

func (s nodeSource) Trust(ctx context.Context, index uint64, wait time.Duration, full bool) (trust.Delta, error) {
	return s.cl.Trust(ctx, index, wait, full)
}

func (s nodeSource) Close() { s.cl.Close() }
