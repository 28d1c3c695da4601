package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	dto "github.com/prometheus/client_model/go"
)

// fedNetwork is a network's AS root and issuer, for federated keys.
type fedNetwork struct {
	t       testing.TB
	name    string
	root    ca.Signer
	issuer  ca.Signer
	created time.Time
}

func newFedNetwork(t testing.TB, name string, now time.Time) *fedNetwork {
	t.Helper()
	root, err := ca.NewRoot(name, now.Add(-time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	ik, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := ca.SignIntermediate(root, ik.Public(), name, "r1", now.Add(-time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fedNetwork{t: t, name: name, root: root, issuer: ca.Signer{Cert: ic, Key: ik}, created: now}
}

// nodeJWK is the published JWK of a new node id of n, certified for
// validity from now-1h (in the network the certificate names: network).
func (n *fedNetwork) nodeJWK(id, network string, validity time.Duration) identity.JWK {
	n.t.Helper()
	key, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	c, err := ca.SignNode(n.issuer, ca.NodeRequest{PublicKey: key.Public(), Network: network, NodeID: id,
		Validity: validity, Now: n.created.Add(-time.Hour)}, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	j, err := identity.NewJWK(key.Public(), []*x509.Certificate{c, n.issuer.Cert})
	if err != nil {
		n.t.Fatal(err)
	}
	return j
}

// TestFederatedKeys: of a federated network's published JWKS only the
// keys of its nodes that chain to its anchor now are kept, sorted by kid;
// a document that is not a JWKS is refused whole.
func TestFederatedKeys(t *testing.T) {
	now := time.Now()
	fed := newFedNetwork(t, "fed.example.org", now)
	other := newFedNetwork(t, "other.example.org", now)
	good1, good2 := fed.nodeJWK("f-1", fed.name, 24*time.Hour), fed.nodeJWK("f-2", fed.name, 24*time.Hour)
	expired := fed.nodeJWK("f-old", fed.name, 30*time.Minute)
	foreign := other.nodeJWK("o-1", other.name, 24*time.Hour)
	doc, err := identity.JWKS{Keys: []identity.JWK{good1, expired, foreign, good2}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := FederatedKeys(doc, fed.name, []*x509.Certificate{fed.root.Cert}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].KID >= keys[1].KID {
		t.Fatalf("kept %d keys (want f-1 and f-2, sorted): %+v", len(keys), keys)
	}
	for _, k := range keys {
		if k.Node != "f-1" && k.Node != "f-2" {
			t.Fatalf("kept %s's key", k.Node)
		}
	}
	// Under another network's anchor, the same document gives nothing.
	if keys, err := FederatedKeys(doc, other.name, []*x509.Certificate{fed.root.Cert}, now); err != nil || len(keys) != 0 {
		t.Fatalf("keys of the wrong anchor kept: %d, %v", len(keys), err)
	}
	for _, bad := range []string{``, `{}`, `[]`, `{"keys":{}}`, `{"keys":[{"kty":"EC"}]}`, `{"keys":[]} trailing`, "{\"keys\":[\xff]}"} {
		if _, err := FederatedKeys([]byte(bad), fed.name, []*x509.Certificate{fed.root.Cert}, now); !errors.Is(err, errFederation) {
			t.Errorf("JWKS %q: err %v, want errFederation", bad, err)
		}
	}
}

// jwksServer serves a JWKS document at /.well-known/jwks.json over TLS
// with a server certificate of issuer's network.
type jwksServer struct {
	*httptest.Server
	doc         atomic.Pointer[[]byte]
	notModified atomic.Int64 // answers 304 to If-None-Match
}

func newJWKSServer(t *testing.T, issuer ca.Signer, network string, now time.Time) *jwksServer {
	t.Helper()
	key, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignServerTLS(issuer, key.Public(), network, "r1", []string{"127.0.0.1"}, now.Add(-time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	js := &jwksServer{}
	js.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		doc := *js.doc.Load()
		etag := identity.ETag(doc)
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			js.notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write(doc)
	}))
	js.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw, issuer.Cert.Raw}, PrivateKey: key, Leaf: cert}}}
	js.StartTLS()
	t.Cleanup(js.Close)
	return js
}

func (js *jwksServer) publish(t *testing.T, keys ...identity.JWK) {
	t.Helper()
	doc, err := identity.JWKS{Keys: keys}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	js.doc.Store(&doc)
}

// TestFederationFetch: the leader follows a federated network's published
// JWKS: an endpoint whose TLS does not chain to the anchor (an impostor)
// is passed over for the next; the keys of its nodes are written into the
// anchor, and written again when the roots publish another set (a key
// that leaves is gone here); an endpoint that stops answering keeps the
// last set and counts failures.
func TestFederationFetch(t *testing.T) {
	now := time.Now()
	opts := testOptions(t)
	opts.FederationInterval = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, _, err := startBootstrap(ctx, BootstrapConfig{Network: "test.keymesh.example", Name: "r1", DataDir: t.TempDir(),
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown() })
	fed := newFedNetwork(t, "fed.example.org", now)
	impostor := newFedNetwork(t, "fed.example.org", now) // the same name, another AS root
	good, fake := newJWKSServer(t, fed.issuer, fed.name, now), newJWKSServer(t, impostor.issuer, fed.name, now)
	k1, k2 := fed.nodeJWK("f-1", fed.name, 24*time.Hour), fed.nodeJWK("f-2", fed.name, 24*time.Hour)
	good.publish(t, k1)
	fake.publish(t, impostor.nodeJWK("f-9", fed.name, 24*time.Hour))
	if _, err := srv.Propose(ctx, fsm.MsgTrustAnchorPut, fsm.TrustAnchorPut{Anchor: fsm.TrustAnchor{Network: fed.name,
		Roots: [][]byte{fed.root.Cert.Raw}, Endpoints: []string{fake.Listener.Addr().String(), good.Listener.Addr().String()}}}); err != nil {
		t.Fatal(err)
	}
	keysAre := func(want ...identity.JWK) func() bool {
		return func() bool {
			a, _ := srv.store.TrustAnchor(fed.name)
			if len(a.Keys) != len(want) {
				return false
			}
			for _, w := range want {
				if _, ok := fsm.FindFederatedKey(a.Keys, w.Kid); !ok {
					return false
				}
			}
			return true
		}
	}
	waitState(t, srv, "f-1's key fetched past the impostor", 10*time.Second, keysAre(k1))
	good.publish(t, k2)
	waitState(t, srv, "f-1's key replaced by f-2's", 10*time.Second, keysAre(k2))
	if _, _, ok := srv.store.FederatedKey(k1.Kid); ok {
		t.Fatal("a key its roots no longer publish is still found")
	}
	// An unchanged document is asked for with its ETag, answered 304, and
	// writes nothing.
	idx := srv.store.Index()
	deadline := time.Now().Add(10 * time.Second)
	for good.notModified.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the leader fetches the unchanged JWKS without If-None-Match")
		}
		time.Sleep(10 * time.Millisecond) // the fetch loop has no event to wait on
	}
	if srv.store.Index() != idx {
		t.Fatal("a not-modified answer changed the state")
	}
	failed := fetches(t, srv, fed.name, "failed")
	good.Close()
	idx = srv.store.Index()
	deadline = time.Now().Add(10 * time.Second)
	for fetches(t, srv, fed.name, "failed") < failed+2 {
		if time.Now().After(deadline) {
			t.Fatal("no failed fetch counted once the endpoints stopped answering")
		}
		time.Sleep(10 * time.Millisecond) // the fetch loop has no event to wait on
	}
	if srv.store.Index() != idx || !keysAre(k2)() {
		t.Fatal("a failed fetch changed the state")
	}
}

// fetches reads keymesh_federation_fetches_total{network,result} of srv.
func fetches(t *testing.T, srv *Server, network, result string) float64 {
	t.Helper()
	var m dto.Metric
	if err := srv.metrics.fedFetch.WithLabelValues(network, result).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// FuzzFederatedKeys: a federated network's published JWKS is outside
// input: whatever it holds, FederatedKeys never panics, and what it keeps
// is sorted by kid without repeats, each a node of that network whose
// chain verifies to the anchor.
func FuzzFederatedKeys(f *testing.F) {
	now := time.Now()
	fed := newFedNetwork(f, "fed.example.org", now)
	doc, err := identity.JWKS{Keys: []identity.JWK{fed.nodeJWK("f-1", fed.name, 24*time.Hour)}}.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"k"}]}`))
	roots := []*x509.Certificate{fed.root.Cert}
	f.Fuzz(func(t *testing.T, doc []byte) {
		keys, err := FederatedKeys(doc, fed.name, roots, now)
		if err != nil {
			if !errors.Is(err, errFederation) {
				t.Fatalf("an error that is not errFederation: %v", err)
			}
			return
		}
		for i, k := range keys {
			if i > 0 && keys[i-1].KID >= k.KID {
				t.Fatalf("keys not sorted without repeats at %s", k.KID)
			}
			j, err := identity.ParseJWK(k.Key, identity.Limits{})
			if err != nil {
				t.Fatalf("a kept key does not parse: %v", err)
			}
			key, err := identity.KeyFromJWK(j)
			if err != nil || key.KID != k.KID {
				t.Fatalf("a kept key %s: %v", k.KID, err)
			}
			id, err := ca.IdentityOf(key.Chain[0])
			if err != nil || id.Network != fed.name || id.Name != k.Node {
				t.Fatalf("a kept key of %v, node %s: %v", id, k.Node, err)
			}
		}
	})
}
