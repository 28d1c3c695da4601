package cluster

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
)

// apiClient is a raw HTTPS client for srv, presenting cert when given.
func apiClient(t *testing.T, srv *Server, cert *tls.Certificate) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	roots, err := ca.ReadCertsFile(RootsPath(srv.DataDir()))
	if err != nil {
		t.Fatal(err)
	}
	pool.AddCert(roots[0])
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 15 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func adminCert(t *testing.T, srv *Server) *tls.Certificate {
	t.Helper()
	c, err := ca.LoadCredential(CredentialPath(srv.DataDir()))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// nodeCert is a node certificate of srv's network, signed by srv's issuer.
func nodeCert(t *testing.T, srv *Server) *tls.Certificate {
	t.Helper()
	k, _ := ca.GenerateKey(ca.KeyP256, nil)
	c, err := ca.SignNode(srv.issuer, ca.NodeRequest{PublicKey: k.Public(), Network: srv.Network(), NodeID: "n1", Now: time.Now()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tc := tlsCertificate([]*x509.Certificate{c, srv.issuer.Cert}, k)
	return &tc
}

type apiCase struct {
	name        string
	cert        string // "", "admin", "node"
	method      string
	path        string
	contentType string
	body        string
	status      int
	code        string
}

func TestAPIRefusesBadInput(t *testing.T) {
	tc := newTestCluster(t, 1)
	srv := tc.servers[0]
	certs := map[string]*tls.Certificate{"admin": adminCert(t, srv), "node": nodeCert(t, srv), "": nil}
	big := `{"kind":"token","id":"x","reason":"` + strings.Repeat("a", 70<<10) + `"}`
	cases := []apiCase{
		{"malformed JSON", "admin", "POST", "/v1/revocations", "", `{"kind":`, 400, api.CodeBadRequest},
		{"not an object", "admin", "POST", "/v1/revocations", "", `[1,2]`, 400, api.CodeBadRequest},
		{"unknown field", "admin", "POST", "/v1/revocations", "", `{"kind":"token","id":"x","colour":"red"}`, 400, api.CodeBadRequest},
		{"trailing data", "admin", "POST", "/v1/revocations", "", `{"kind":"token","id":"x"} {}`, 400, api.CodeBadRequest},
		{"duplicate key", "admin", "POST", "/v1/revocations", "", `{"kind":"token","id":"x","id":"y"}`, 400, api.CodeBadRequest},
		{"name in another case", "admin", "POST", "/v1/revocations", "", `{"Kind":"token","id":"x"}`, 400, api.CodeBadRequest},
		{"invalid UTF-8", "admin", "POST", "/v1/revocations", "", "{\"kind\":\"token\",\"id\":\"x\",\"reason\":\"\xff\"}", 400, api.CodeBadRequest},
		{"duplicate key in a registration", "", "POST", "/v1/registrations", "", `{"node_id":"a","node_id":"b"}`, 400, api.CodeBadRequest},
		{"upper-case node id", "", "POST", "/v1/registrations", "", `{"node_id":"Edge-1","csr":"MIIB"}`, 400, api.CodeBadRequest},
		{"duplicate key on an internal call", "", "POST", "/v1/cluster/join", "", `{"token":"a","token":"b"}`, 400, api.CodeBadRequest},
		{"empty body", "admin", "POST", "/v1/revocations", "", ``, 400, api.CodeBadRequest},
		{"oversized body", "admin", "POST", "/v1/revocations", "", big, 413, api.CodeTooLarge},
		{"wrong content type", "admin", "POST", "/v1/revocations", "text/plain", `{"kind":"token","id":"x"}`, 415, api.CodeBadRequest},
		{"unknown kind", "admin", "POST", "/v1/revocations", "", `{"kind":"planet","id":"x"}`, 400, api.CodeBadRequest},
		{"id with a slash", "admin", "POST", "/v1/revocations", "", `{"kind":"token","id":"a/b"}`, 400, api.CodeBadRequest},
		{"cert serial not hex", "admin", "POST", "/v1/revocations", "", `{"kind":"cert","id":"xyz"}`, 400, api.CodeBadRequest},
		{"cert serial zero", "admin", "POST", "/v1/revocations", "", `{"kind":"cert","id":"00"}`, 400, api.CodeBadRequest},
		{"no credential", "", "POST", "/v1/revocations", "", `{"kind":"token","id":"x"}`, 401, api.CodeUnauthorized},
		{"node credential on an admin call", "node", "POST", "/v1/revocations", "", `{"kind":"token","id":"x"}`, 403, api.CodeForbidden},
		{"node credential on an internal call", "node", "POST", "/v1/internal/apply", "", `{"command":"AQ=="}`, 403, api.CodeForbidden},
		{"admin on an internal call", "admin", "POST", "/v1/internal/apply", "", `{"command":"AQ=="}`, 403, api.CodeForbidden},
		{"too many token uses", "admin", "POST", "/v1/join-tokens", "", `{"kind":"node","principal":"NODE","uses":10001}`, 400, api.CodeBadRequest},
		{"token ttl too long", "admin", "POST", "/v1/join-tokens", "", `{"kind":"node","principal":"NODE","ttl":"1000h"}`, 400, api.CodeBadRequest},
		{"token ttl not a duration", "admin", "POST", "/v1/join-tokens", "", `{"kind":"node","ttl":"soon"}`, 400, api.CodeBadRequest},
		{"token kind unknown", "admin", "POST", "/v1/join-tokens", "", `{"kind":"guest"}`, 400, api.CodeBadRequest},
		{"revoke unknown join token", "admin", "DELETE", "/v1/join-tokens/0123456789abcdef", "", ``, 404, api.CodeNotFound},
		{"remove unknown server", "admin", "DELETE", "/v1/cluster/servers/nobody", "", ``, 404, api.CodeNotFound},
		{"join with an unknown token", "", "POST", "/v1/cluster/join", "", `{"token":"kmjt.nope","name":"r9","raft_addr":"127.0.0.1:1","api_addr":"127.0.0.1:2","issuer_key":"AAAA"}`, 400, api.CodeBadRequest},
		{"join with a bad issuer key", "", "POST", "/v1/cluster/join", "", `{"token":"kmjt.nope","name":"r9","raft_addr":"127.0.0.1:1","api_addr":"127.0.0.1:2","issuer_key":"AAAA"}`, 400, api.CodeBadRequest},
		{"join with a bad name", "", "POST", "/v1/cluster/join", "", `{"token":"kmjt.nope","name":"r 9","raft_addr":"127.0.0.1:1","api_addr":"127.0.0.1:2"}`, 400, api.CodeBadRequest},
		{"join with a wildcard address", "", "POST", "/v1/cluster/join", "", `{"token":"kmjt.nope","name":"r9","raft_addr":"0.0.0.0:1","api_addr":"127.0.0.1:2"}`, 400, api.CodeBadRequest},
		{"trust index not a number", "admin", "GET", "/v1/trust?index=-1", "", ``, 400, api.CodeBadRequest},
		{"unknown route", "admin", "GET", "/v1/nothing", "", ``, 404, api.CodeNotFound},
		{"oversized registration", "", "POST", "/v1/registrations", "", `{"node_id":"a","csr":"` + strings.Repeat("A", 70<<10) + `"}`, 413, api.CodeTooLarge},
		{"registration with unknown field", "", "POST", "/v1/registrations", "", `{"node_id":"a","cn":"x"}`, 400, api.CodeBadRequest},
		{"collect of an unknown registration", "", "POST", "/v1/registrations/reg-x/collect", "", `{"time":"2026-01-01T00:00:00Z","signature":"AAAA"}`, 404, api.CodeNotFound},
		{"approve unknown registration", "admin", "POST", "/v1/registrations/reg-x/approve", "", `{}`, 404, api.CodeNotFound},
		{"policy that does not parse", "admin", "PUT", "/v1/policies", "", `{"text":"permit (","expect_version":0}`, 400, api.CodeInvalidPolicy},
		{"bearer without a token", "", "GET", "/v1/cluster/status", "", ``, 401, api.CodeUnauthorized},
		{"gossip keys without a certificate", "", "GET", "/v1/gossip/keys", "", ``, 401, api.CodeUnauthorized},
		{"gossip keys to an operator", "admin", "GET", "/v1/gossip/keys", "", ``, 403, api.CodeForbidden},
		{"gossip keys to an unregistered node", "node", "GET", "/v1/gossip/keys", "", ``, 403, ""},
		{"gossip keyring without a credential", "", "GET", "/v1/gossip/keyring", "", ``, 401, api.CodeUnauthorized},
		{"gossip rotation by a node", "node", "POST", "/v1/gossip/rotate", "", `{}`, 403, ""},
		{"network AS number missing", "admin", "PUT", "/v1/network/asn", "", `{}`, 400, api.CodeBadRequest},
		{"network AS 0", "admin", "PUT", "/v1/network/asn", "", `{"asn":0}`, 400, api.CodeBadRequest},
		{"network AS_TRANS", "admin", "PUT", "/v1/network/asn", "", `{"asn":23456}`, 400, api.CodeBadRequest},
		{"network AS over 32 bits", "admin", "PUT", "/v1/network/asn", "", `{"asn":4294967296}`, 400, api.CodeBadRequest},
		{"network AS negative", "admin", "PUT", "/v1/network/asn", "", `{"asn":-1}`, 400, api.CodeBadRequest},
		{"network AS as text", "admin", "PUT", "/v1/network/asn", "", `{"asn":"AS64500"}`, 400, api.CodeBadRequest},
		{"network AS set by a node", "node", "PUT", "/v1/network/asn", "", `{"asn":64500}`, 403, ""},
		{"network without a credential", "", "GET", "/v1/network", "", ``, 401, api.CodeUnauthorized},
		{"network exclusive missing", "admin", "PUT", "/v1/network/exclusive", "", `{}`, 400, api.CodeBadRequest},
		{"network exclusive null", "admin", "PUT", "/v1/network/exclusive", "", `{"exclusive":null}`, 400, api.CodeBadRequest},
		{"network exclusive as text", "admin", "PUT", "/v1/network/exclusive", "", `{"exclusive":"on"}`, 400, api.CodeBadRequest},
		{"network exclusive with another field", "admin", "PUT", "/v1/network/exclusive", "", `{"exclusive":true,"network":"other.example"}`, 400, api.CodeBadRequest},
		{"network exclusive set by a node", "node", "PUT", "/v1/network/exclusive", "", `{"exclusive":true}`, 403, api.CodeForbidden},
		{"network exclusive without a credential", "", "PUT", "/v1/network/exclusive", "", `{"exclusive":true}`, 401, api.CodeUnauthorized},
		{"route authorization of AS 65535", "admin", "POST", "/v1/routes/authorizations", "", `{"prefix":"10.0.0.0/8","origins":["edge-1"],"asn":65535}`, 400, api.CodeBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, _ := hashIndex(srv.Store())
			status, code, msg := call(t, apiClient(t, srv, certs[c.cert]), srv, c)
			if status != c.status || !strings.Contains(code, c.code) {
				t.Errorf("got %d %q (%s), want %d %q", status, code, msg, c.status, c.code)
			}
			if msg == "" {
				t.Error("error without a message")
			}
			after, _ := hashIndex(srv.Store())
			if before != after {
				t.Error("a refused call changed the replicated state")
			}
		})
	}
}

// call makes one API call and returns status, error code and message.
func call(t *testing.T, hc *http.Client, srv *Server, c apiCase) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(c.method, "https://"+srv.APIAddr()+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.body != "" {
		ct := c.contentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	var eb api.ErrorEnvelope
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &eb); err != nil {
		t.Errorf("answer is not the JSON error shape: %q", b)
	}
	return resp.StatusCode, eb.Error.Code, eb.Error.Message
}

// FuzzDecodeRequest feeds arbitrary bodies to the API's JSON decoder for
// every request type: it never panics and accepts only one JSON object.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"kind":"token","id":"x"}`, `{"kind":"root","uses":2,"ttl":"1h"}`, `{"token":"t","name":"r2","raft_addr":"a:1","api_addr":"b:2","issuer_key":"AAAA"}`,
		`{"command":"AQID"}`, `{"csr":"MIIB","node_id":"n1","token":"kmjt.x","dns_names":["a.example"]}`,
		`{"time":"2026-01-01T00:00:00Z","signature":"AAAA"}`, `{"text":"permit(principal,action,resource);","expect_version":3}`, `{}`, `[]`, `null`, `{"a":1}{}`, "\x00", `{"id":"` + strings.Repeat("9", 100) + `"}`,
	} {
		f.Add([]byte(seed))
	}
	s := &Server{opts: Options{}.withDefaults()}
	s.log = s.opts.Logger
	targets := []func() any{
		func() any { return &api.RevokeRequest{} }, func() any { return &api.CreateJoinTokenRequest{} },
		func() any { return &api.JoinRequest{} }, func() any { return &applyRequest{} },
		func() any { return &addVoterRequest{} }, func() any { return &removeServerRequest{} },
		func() any { return &api.RegisterRequest{} }, func() any { return &api.CollectRequest{} },
		func() any { return &api.DenyRequest{} }, func() any { return &api.RenewRequest{} },
		func() any { return &api.SetPolicyRequest{} }, func() any { return &api.TokenRequest{} },
		func() any { return &api.NetworkASNRequest{} }, func() any { return &api.NetworkExclusiveRequest{} },
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, mk := range targets {
			w := httptest.NewRecorder()
			r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			v := mk()
			ok := s.decode(w, r, v)
			if ok && !json.Valid(body) {
				t.Fatalf("accepted invalid JSON %q", body)
			}
			if ok && hasDuplicateKey(body) {
				t.Fatalf("accepted a duplicate key in %q", body)
			}
			if !ok {
				var eb api.ErrorEnvelope
				if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" {
					t.Fatalf("refusal without the error shape: %q", w.Body.String())
				}
			}
		}
		if req := (api.RevokeRequest{}); json.Unmarshal(body, &req) == nil {
			_ = fmt.Sprint(req)
		}
	})
}

// hasDuplicateKey reports whether the top-level object of b names a member
// twice.
func hasDuplicateKey(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		k, _ := t.(string)
		if seen[k] {
			return true
		}
		seen[k] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return false
		}
	}
	return false
}
