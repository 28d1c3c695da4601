package client_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity/trust"
)

// TestRouteAuthorizations: authorize adds origins to a prefix (making its
// authorization), sets the max length; two operators adding origins at
// once lose neither (compare-and-set); unauthorize removes origins, then
// the whole authorization; bad prefixes are refused with the form to use.
func TestRouteAuthorizations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	servers, dir := startServers(t, 3)
	cl := newClient(t, servers[1], dir)
	res, err := cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.20.0.0/16", Origins: []string{"edge-1"}, MaxLength: 24})
	if err != nil || res.Auth == nil || res.Auth.MaxLength != 24 || !slices.Equal(res.Auth.Origins, []string{"edge-1"}) {
		t.Fatalf("authorize: %+v %v", res, err)
	}
	// Concurrent additions through different servers.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(t, servers[i%3], dir)
			if _, err := c.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.20.0.0/16", Origins: []string{fmt.Sprintf("edge-%d", i+2)}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	auths, err := cl.RouteAuths(ctx, true)
	if err != nil || len(auths) != 1 || len(auths[0].Origins) != 9 || auths[0].MaxLength != 24 {
		t.Fatalf("after concurrent additions: %+v %v", auths, err)
	}
	if res, err = cl.UnauthorizeRoute(ctx, "10.20.0.0/16", []string{"edge-1", "edge-2"}); err != nil || res.Removed || len(res.Auth.Origins) != 7 {
		t.Fatalf("unauthorize two origins: %+v %v", res, err)
	}
	if res, err = cl.UnauthorizeRoute(ctx, "10.20.0.0/16", nil); err != nil || !res.Removed {
		t.Fatalf("unauthorize the prefix: %+v %v", res, err)
	}
	if _, err := cl.UnauthorizeRoute(ctx, "10.20.0.0/16", nil); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("unauthorize again: %v", err)
	}
	if res, err = cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "2001:db8::/32", Origins: []string{"edge-1"}}); err != nil || res.Auth.MaxLength != 32 {
		t.Fatalf("an IPv6 prefix, default max length: %+v %v", res, err)
	}
	for _, req := range []api.RouteAuthRequest{
		{Prefix: "10.20.0.1/16", Origins: []string{"edge-1"}},
		{Prefix: "10.20.0.0", Origins: []string{"edge-1"}},
		{Prefix: "10.20.0.0/16"},
		{Prefix: "10.20.0.0/16", Origins: []string{"Edge-1"}},
		{Prefix: "10.20.0.0/16", Origins: []string{"edge-1"}, MaxLength: 8},
		{Prefix: "10.20.0.0/16", Origins: []string{"edge-1"}, MaxLength: 33},
	} {
		if _, err := cl.AuthorizeRoute(ctx, req); !errors.Is(err, api.ErrBadRequest) {
			t.Errorf("authorize %+v: %v", req, err)
		}
	}
}

// TestTrustAnchors: a federated network's AS root is anchored and its
// members accepted; listing shows it; removal takes both away. Anchors
// that are not CA certificates, are expired, are intermediates, carry no
// or another network's name constraint, or name this cluster's own
// network are refused with a clear error and change nothing.
func TestTrustAnchors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	servers, dir := startServers(t, 1)
	cl := newClient(t, servers[0], dir)
	now := time.Now()
	other, err := ca.NewRoot("testnet.example.net", now, nil)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(certs ...*x509.Certificate) []byte { return ca.EncodeCertsPEM(certs...) }
	ik, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := ca.SignIntermediate(other, ik.Public(), "testnet.example.net", "r1", now, nil)
	if err != nil {
		t.Fatal(err)
	}
	nk, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignNode(ca.Signer{Cert: inter, Key: ik}, ca.NodeRequest{PublicKey: nk.Public(), Network: "testnet.example.net", NodeID: "t-1", Now: now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	unconstrained := selfSigned(t, now, nil)
	wrongName := selfSigned(t, now, []string{"other.example.net"})
	expired := selfSigned(t, now.Add(-48*time.Hour), []string{"testnet.example.net"})
	before, err := cl.Anchors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, network string
		pem           []byte
		endpoints     []string
	}{
		{"garbage", "testnet.example.net", []byte("not a certificate"), nil},
		{"a node certificate", "testnet.example.net", pemOf(leaf), nil},
		{"an endpoint that is not host:port", "testnet.example.net", pemOf(other.Cert), []string{"t1.example.net"}},
		{"an endpoint twice", "testnet.example.net", pemOf(other.Cert), []string{"t1.example.net:8443", "t1.example.net:8443"}},
		{"too many endpoints", "testnet.example.net", pemOf(other.Cert), []string{"a:1", "b:1", "c:1", "d:1", "e:1", "f:1", "g:1", "h:1", "i:1"}},
		{"an intermediate", "testnet.example.net", pemOf(inter), nil},
		{"no name constraint", "testnet.example.net", pemOf(unconstrained), nil},
		{"another network's constraint", "testnet.example.net", pemOf(wrongName), nil},
		{"expired", "testnet.example.net", pemOf(expired), nil},
		{"bad network name", "Testnet", pemOf(other.Cert), nil},
		{"the own network", servers[0].Network(), pemOf(other.Cert), nil},
	} {
		if _, err := cl.PutAnchor(ctx, tc.network, tc.pem, tc.endpoints...); err == nil {
			t.Errorf("%s: accepted", tc.name)
		} else if !errors.Is(err, api.ErrBadRequest) && !errors.Is(err, api.ErrConflict) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if after, _ := cl.Anchors(ctx); len(after) != len(before) {
		t.Fatalf("refused anchors changed the list: %+v", after)
	}
	res, err := cl.PutAnchor(ctx, "testnet.example.net", pemOf(other.Cert))
	if err != nil || res.Anchor == nil || !res.Anchor.Accepted || res.Anchor.Roots[0].CAHash != ca.Hash(other.Cert) {
		t.Fatalf("trust add: %+v %v", res, err)
	}
	list, err := cl.Anchors(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("trust list: %+v %v", list, err)
	}
	if _, err := cl.DeleteAnchor(ctx, "testnet.example.net"); err != nil {
		t.Fatal(err)
	}
	if list, _ := cl.Anchors(ctx); len(list) != 1 || !list[0].Own {
		t.Fatalf("after trust remove: %+v", list)
	}
	if _, err := cl.DeleteAnchor(ctx, "testnet.example.net"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("trust remove again: %v", err)
	}
	if _, err := cl.DeleteAnchor(ctx, servers[0].Network()); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("trust remove of the own network: %v", err)
	}
}

// selfSigned is a self-signed CA valid for a day from notBefore with the
// URI name constraints given.
func selfSigned(t *testing.T, notBefore time.Time, domains []string) *x509.Certificate {
	t.Helper()
	k, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "someone's root"},
		NotBefore: notBefore, NotAfter: notBefore.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, PermittedURIDomains: domains}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNetworkASN: the network's AS number is set and read back through
// any server; a refused one changes nothing; a route authorization takes
// the AS it names, else the one it has, else the network's, and one made
// without any is made with a warning. A gossip key rotation, which
// rewrites the CA record, keeps the AS number.
func TestNetworkASN(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	servers, dir := startServers(t, 2)
	cl, leader := newClient(t, servers[1], dir), newClient(t, servers[0], dir)
	info, err := cl.Network(ctx)
	if err != nil || info.Network != servers[0].Network() || info.ASN != 0 || info.Index == 0 {
		t.Fatalf("network before: %+v %v", info, err)
	}
	res, err := cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.30.0.0/16", Origins: []string{"edge-1"}})
	if err != nil || res.Auth == nil || res.Auth.ASN != 0 || res.Warning == "" {
		t.Fatalf("authorize without any AS number: %+v %v", res, err)
	}
	for _, asn := range []uint32{0, 23456, 65535, 4294967295} {
		if got, err := cl.SetNetworkASN(ctx, asn); !errors.Is(err, api.ErrBadRequest) {
			t.Errorf("set the network's AS %d: %+v %v", asn, got, err)
		}
		if asn == 0 {
			continue // none asked for: the network's
		}
		if got, err := cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.31.0.0/16", Origins: []string{"edge-1"}, ASN: asn}); !errors.Is(err, api.ErrBadRequest) {
			t.Errorf("authorize with AS %d: %+v %v", asn, got, err)
		}
	}
	if after, err := cl.Network(ctx); err != nil || after != info {
		t.Fatalf("refused AS numbers changed the network: %+v %v", after, err)
	}
	if auths, err := cl.RouteAuths(ctx, true); err != nil || len(auths) != 1 {
		t.Fatalf("refused AS numbers made authorizations: %+v %v", auths, err)
	}

	set, err := cl.SetNetworkASN(ctx, 64500)
	if err != nil || set.ASN != 64500 || set.Index <= info.Index || set.Network != info.Network {
		t.Fatalf("set the network's AS: %+v %v", set, err)
	}
	if got, err := leader.Network(ctx); err != nil || got != set {
		t.Fatalf("the network through the other server: %+v %v, want %+v", got, err, set)
	}
	if again, err := cl.SetNetworkASN(ctx, 64500); err != nil || again != set {
		t.Fatalf("the same AS again writes nothing: %+v %v, want %+v", again, err, set)
	}

	for _, tc := range []struct {
		name string
		req  api.RouteAuthRequest
		want uint32
	}{
		{"the network's", api.RouteAuthRequest{Prefix: "10.40.0.0/16", Origins: []string{"edge-1"}}, 64500},
		{"its own", api.RouteAuthRequest{Prefix: "10.41.0.0/16", Origins: []string{"edge-1"}, ASN: 4200000000}, 4200000000},
		{"the network's, for one that had none", api.RouteAuthRequest{Prefix: "10.30.0.0/16", Origins: []string{"edge-2"}}, 64500},
		{"the one it has", api.RouteAuthRequest{Prefix: "10.41.0.0/16", Origins: []string{"edge-2"}}, 4200000000},
		{"another one asked for", api.RouteAuthRequest{Prefix: "10.40.0.0/16", Origins: []string{"edge-2"}, ASN: 64501}, 64501},
	} {
		res, err := cl.AuthorizeRoute(ctx, tc.req)
		if err != nil || res.Auth == nil || res.Auth.ASN != tc.want || res.Warning != "" {
			t.Errorf("%s: %+v %v, want AS %d", tc.name, res, err, tc.want)
		}
	}
	auths, err := leader.RouteAuths(ctx, true)
	if err != nil || len(auths) != 3 || auths[0].ASN != 64500 || len(auths[0].Origins) != 2 || auths[1].ASN != 64501 || auths[2].ASN != 4200000000 {
		t.Fatalf("authorizations: %+v %v", auths, err)
	}

	if _, err := cl.RotateGossipKey(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.Network(ctx); err != nil || got.ASN != 64500 || got.Index <= set.Index {
		t.Fatalf("after a gossip key rotation: %+v %v", got, err)
	}
}

// TestNetworkExclusive: the network's exclusive membership is turned on
// through a follower (forwarded to the leader) and read back through any
// server; the same value again writes nothing; it is the own anchor's
// flag, so a trust add, which rewrites that record's access list, keeps
// it, and followers of the trust state get it with the anchor; an AS
// number set meanwhile leaves it be; Cedar decides it as trust.write on
// the own network's anchor (TestAPIRefusesBadInput has the refused
// bodies).
func TestNetworkExclusive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	servers, dir := startServers(t, 2)
	cl, leader := newClient(t, servers[1], dir), newClient(t, servers[0], dir)
	network := servers[0].Network()
	info, err := cl.Network(ctx)
	if err != nil || info.Exclusive || info.AnchorIndex == 0 || info.Network != network {
		t.Fatalf("network before: %+v %v", info, err)
	}

	set, err := cl.SetNetworkExclusive(ctx, true)
	if err != nil || !set.Exclusive || set.AnchorIndex <= info.AnchorIndex || set.Index != info.Index || set.ASN != info.ASN {
		t.Fatalf("exclusive on: %+v %v (before %+v)", set, err, info)
	}
	if got, err := leader.Network(ctx); err != nil || got != set {
		t.Fatalf("the network through the other server: %+v %v, want %+v", got, err, set)
	}
	if again, err := cl.SetNetworkExclusive(ctx, true); err != nil || again != set {
		t.Fatalf("exclusive on again writes nothing: %+v %v, want %+v", again, err, set)
	}
	for _, s := range servers {
		if !trust.Exclusive(s.Store(), network) {
			t.Fatalf("%s: the replicated anchor is not exclusive", s.Name())
		}
	}

	other, err := ca.NewRoot("testnet.example.net", time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.PutAnchor(ctx, "testnet.example.net", ca.EncodeCertsPEM(other.Cert)); err != nil {
		t.Fatal(err)
	}
	after, err := cl.Network(ctx)
	if err != nil || !after.Exclusive || after.AnchorIndex <= set.AnchorIndex {
		t.Fatalf("after trust add: %+v %v", after, err)
	}
	d, err := cl.Trust(ctx, 0, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	st, err := trust.NewState(d)
	if err != nil || !trust.Exclusive(st, network) || trust.Exclusive(st, "testnet.example.net") {
		t.Fatalf("the followed trust state: %v, exclusive %v", err, trust.Exclusive(st, network))
	}

	if _, err := cl.SetNetworkASN(ctx, 64500); err != nil {
		t.Fatal(err)
	}
	off, err := cl.SetNetworkExclusive(ctx, false)
	if err != nil || off.Exclusive || off.ASN != 64500 || off.AnchorIndex <= after.AnchorIndex {
		t.Fatalf("exclusive off: %+v %v", off, err)
	}
	if got, err := leader.Network(ctx); err != nil || got != off {
		t.Fatalf("the network through the other server: %+v %v, want %+v", got, err, off)
	}

	// Cedar: a policy that forbids writing the own anchor forbids it,
	// while a federated anchor may still be written.
	doc, err := cl.Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	frozen := doc.Text + "\n@id(\"own-anchor-frozen\")\nforbid (principal, action == Action::\"trust.write\", resource) when { context.own_network };\n"
	if _, err := cl.SetPolicy(ctx, frozen, doc.Version); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.SetNetworkExclusive(ctx, true); !errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), "own-anchor-frozen") {
		t.Fatalf("exclusive on against the policy: %+v %v", got, err)
	}
	if _, err := cl.DeleteAnchor(ctx, "testnet.example.net"); err != nil {
		t.Fatalf("a federated anchor removed under the policy: %v", err)
	}
	if got, err := cl.Network(ctx); err != nil || got.Exclusive {
		t.Fatalf("a refused call changed the network: %+v %v", got, err)
	}
}
