package agent_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
)

// socketHTTP is a plain HTTP client of an agent's unix socket.
func socketHTTP(t *testing.T, socket string) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type rawAnswer struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, cl *http.Client, base, method, path, ctype string, body []byte, hdr map[string]string) rawAnswer {
	t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rawAnswer{status: resp.StatusCode, header: resp.Header, body: b}
}

// errorCode reads {"error":{"code","message"}}; "" if the body is not that.
func errorCode(t *testing.T, b []byte) string {
	t.Helper()
	var eb agent.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Error.Message == "" {
		return ""
	}
	return eb.Error.Code
}

// TestLocalAPIBadInput: requests that are not what the API takes get a
// clear JSON error with a fitting status; tokens that are not valid get
// {valid:false, reason}; nothing panics, and the agent still answers.
func TestLocalAPIBadInput(t *testing.T) {
	t.Parallel()
	e := newRTEnv(t, 1)
	a := e.start(e.node("strict"), agent.RunConfig{ListenTCP: "127.0.0.1:0"})
	cl := socketHTTP(t, a.SocketPath())
	const base = "http://agent"
	good := mint(t, a, a.ID().String(), "5m")
	waitTrust(t, a, "the node in its own trust state", func(v trust.View) bool {
		_, ok := v.Node("strict")
		return ok
	})
	ctJSON := "application/json"

	for _, tc := range []struct {
		name, method, path, ctype, body string
		status                          int
		code                            string
	}{
		{"malformed JSON", "POST", agent.PathMint, ctJSON, `{"aud":`, 400, agent.CodeBadRequest},
		{"not an object", "POST", agent.PathMint, ctJSON, `["aud"]`, 400, agent.CodeBadRequest},
		{"unknown field", "POST", agent.PathMint, ctJSON, `{"aud":"x","scope":"all"}`, 400, agent.CodeBadRequest},
		{"field in other case", "POST", agent.PathMint, ctJSON, `{"AUD":"x"}`, 400, agent.CodeBadRequest},
		{"duplicate field", "POST", agent.PathMint, ctJSON, `{"aud":"x","aud":"y"}`, 400, agent.CodeBadRequest},
		{"trailing data", "POST", agent.PathMint, ctJSON, `{"aud":"x"} {}`, 400, agent.CodeBadRequest},
		{"empty body", "POST", agent.PathMint, ctJSON, ``, 400, agent.CodeBadRequest},
		{"invalid UTF-8", "POST", agent.PathMint, ctJSON, "{\"aud\":\"\xff\"}", 400, agent.CodeBadRequest},
		{"wrong type", "POST", agent.PathMint, ctJSON, `{"aud":"x","ttl":600}`, 400, agent.CodeBadRequest},
		{"aud of numbers", "POST", agent.PathMint, ctJSON, `{"aud":[1]}`, 400, agent.CodeBadRequest},
		{"oversized", "POST", agent.PathMint, ctJSON, `{"aud":"` + strings.Repeat("a", agent.MaxLocalBody) + `"}`, 413, agent.CodeTooLarge},
		{"not JSON content", "POST", agent.PathMint, "text/plain", `{"aud":"x"}`, 415, agent.CodeBadRequest},
		{"bad ttl", "POST", agent.PathMint, ctJSON, `{"aud":"x","ttl":"soon"}`, 400, agent.CodeBadRequest},
		{"negative ttl", "POST", agent.PathMint, ctJSON, `{"aud":"x","ttl":"-1m"}`, 400, agent.CodeBadRequest},
		{"ttl over the maximum", "POST", agent.PathMint, ctJSON, `{"aud":"x","ttl":"48h"}`, 400, agent.CodeMintRefused},
		{"no audience", "POST", agent.PathMint, ctJSON, `{}`, 400, agent.CodeMintRefused},
		{"empty audience", "POST", agent.PathMint, ctJSON, `{"aud":""}`, 400, agent.CodeMintRefused},
		{"unknown principal", "POST", agent.PathMint, ctJSON, `{"aud":"x","principal":"ROOT"}`, 400, agent.CodeMintRefused},
		{"principal not granted", "POST", agent.PathMint, ctJSON, `{"aud":"x","principal":"ADMIN"}`, 400, agent.CodeMintRefused},
		{"verify malformed", "POST", agent.PathVerify, ctJSON, `{"token":`, 400, agent.CodeBadRequest},
		{"verify unknown field", "POST", agent.PathVerify, ctJSON, `{"token":"x","alg":"none"}`, 400, agent.CodeBadRequest},
		{"verify bad peer cert", "POST", agent.PathVerify, ctJSON, `{"token":"x","peer_cert":"not PEM"}`, 400, agent.CodeBadRequest},
		{"verify oversized", "POST", agent.PathVerify, ctJSON, `{"token":"` + strings.Repeat("a", 70<<10) + `"}`, 413, agent.CodeTooLarge},
		{"GET mint", "GET", agent.PathMint, "", ``, 405, agent.CodeMethod},
		{"POST jwks", "POST", agent.PathJWKS, ctJSON, `{}`, 405, agent.CodeMethod},
		{"unknown path", "GET", "/v1/secrets", "", ``, 404, agent.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := do(t, cl, base, tc.method, tc.path, tc.ctype, []byte(tc.body), nil)
			if got.status != tc.status || errorCode(t, got.body) != tc.code {
				t.Fatalf("got %d %s, want %d %s", got.status, got.body, tc.status, tc.code)
			}
		})
	}

	// Tokens that are not valid: an answer, not an error.
	parts := strings.Split(good.Token, ".")
	hdr := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct{ name, token, reason string }{
		{"empty", "", "malformed"},
		{"garbage", "garbage", "malformed"},
		{"two parts", parts[0] + "." + parts[1], "malformed"},
		{"truncated by a quantum", good.Token[:len(good.Token)-4], "bad_signature"},
		{"truncated mid-quantum", good.Token[:len(good.Token)-7], "malformed"}, // 121 characters: never base64
		{"cut in the payload", good.Token[:len(parts[0])+10], "malformed"},
		{"padding", good.Token + "=", "malformed"},
		{"alg none", hdr(`{"alg":"none","kid":"k"}`) + "." + parts[1] + ".", "alg_not_allowed"},
		{"HS384", hdr(`{"alg":"HS384","kid":"`+good.KID+`"}`) + "." + parts[1] + "." + parts[2], "alg_not_allowed"},
		{"ES256 on P-384", hdr(`{"alg":"ES256","kid":"`+good.KID+`"}`) + "." + parts[1] + "." + parts[2], "alg_key_mismatch"},
		{"unknown kid", hdr(`{"alg":"ES384","kid":"nosuchkid"}`) + "." + parts[1] + "." + parts[2], "unknown_key"},
		{"too large", strings.Repeat("a", 9<<10), "too_large"},
		{"other payload", parts[0] + "." + hdr(`{"iss":"x"}`) + "." + parts[2], "bad_signature"},
	} {
		t.Run("token "+tc.name, func(t *testing.T) {
			got := verify(t, a, tc.token)
			if got.Valid || got.Reason != tc.reason || got.Message == "" {
				t.Fatalf("got %+v, want reason %s", got, tc.reason)
			}
		})
	}
	if m, err := a.local.Mint(e.ctx, agent.MintRequest{Audience: agent.Audience{"x", "y"}, Principal: "NODE"}); err != nil || m.Token == "" {
		t.Fatalf("mint with the node's own principal: %v", err)
	}
	// The audience is checked per request.
	got, err := a.local.Verify(e.ctx, agent.VerifyRequest{Token: good.Token, Audience: agent.Audience{"someone-else"}})
	if err != nil || got.Valid || got.Reason != "audience" {
		t.Fatalf("wrong audience: %+v %v", got, err)
	}
	// A bound token needs the certificate it is bound to.
	bound, err := a.local.Mint(e.ctx, agent.MintRequest{Audience: agent.Audience{a.ID().String()}, BindCert: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := verify(t, a, bound.Token); got.Valid || got.Reason != "binding_missing" {
		t.Fatalf("bound token without its certificate: %+v", got)
	}
	certs, err := ca.ReadCertsFile(agent.CertPath(e.base + "/strict"))
	if err != nil {
		t.Fatal(err)
	}
	got, err = a.local.Verify(e.ctx, agent.VerifyRequest{Token: bound.Token, PeerCert: string(ca.EncodeCertsPEM(certs[0]))})
	if err != nil || !got.Valid {
		t.Fatalf("bound token with its certificate: %+v %v", got, err)
	}
	if got := verify(t, a, good.Token); !got.Valid {
		t.Fatalf("the agent refuses a good token after the bad input: %+v", got)
	}

	// On TCP: verify and publish, but no minting.
	tcp := agent.NewLocalClientTCP(a.TCPAddr().String())
	defer tcp.Close()
	var ae *agent.LocalAPIError
	if _, err := tcp.Mint(e.ctx, agent.MintRequest{Audience: agent.Audience{"x"}}); !errors.As(err, &ae) || ae.Status != 403 || ae.Code != agent.CodeForbidden {
		t.Fatalf("mint over TCP: %v", err)
	}
	if got, err := tcp.Verify(e.ctx, agent.VerifyRequest{Token: good.Token}); err != nil || !got.Valid {
		t.Fatalf("verify over TCP: %+v %v", got, err)
	}
}

// TestLocalAPIConfig: the TCP listener is for loopback only.
func TestLocalAPIConfig(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:80", ":8080", "example.com:80"} {
		if _, err := agent.New(agent.RunConfig{DataDir: t.TempDir(), ListenTCP: addr}); !errors.Is(err, agent.ErrNotLoopback) {
			t.Errorf("ListenTCP %q: %v", addr, err)
		}
	}
	if _, err := agent.New(agent.RunConfig{DataDir: t.TempDir(), ListenTCP: "localhost"}); err == nil {
		t.Error("ListenTCP without a port accepted")
	}
	if _, err := agent.New(agent.RunConfig{DataDir: "/" + strings.Repeat("d", 120)}); err == nil || !strings.Contains(err.Error(), "shorter") {
		t.Errorf("long socket path: %v", err)
	}
	if _, err := agent.New(agent.RunConfig{DataDir: t.TempDir()}); !errors.Is(err, agent.ErrNoNode) {
		t.Errorf("empty data directory: %v", err)
	}
}

// TestLocalJWKS: the agent publishes the followed JWKS with Cache-Control
// and an ETag (304 on If-None-Match), a discovery document pointing at it,
// and a third-party JWT library verifies a node's token against it.
func TestLocalJWKS(t *testing.T) {
	t.Parallel()
	e := newRTEnv(t, 1)
	a := e.start(e.node("publisher"), agent.RunConfig{ListenTCP: "127.0.0.1:0"})
	caughtUp(t, a, 1)
	m := mint(t, a, "third-party", "")
	waitTrust(t, a, "the node's own key in its JWKS", func(v trust.View) bool {
		_, ok := v.JWK(m.KID)
		return ok
	})
	base := "http://" + a.TCPAddr().String()
	cl := &http.Client{Timeout: 10 * time.Second}
	got := do(t, cl, base, "GET", agent.PathJWKS, "", nil, nil)
	etag := got.header.Get("ETag")
	if got.status != 200 || etag == "" || !strings.Contains(got.header.Get("Cache-Control"), "max-age") ||
		got.header.Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("JWKS answer %d %v", got.status, got.header)
	}
	set, err := identity.DecodeJWKS(got.body, identity.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := set.Find(m.KID); !ok || len(k.X5c) != 2 {
		t.Fatalf("node key in the JWKS: %+v", k)
	}
	if again := do(t, cl, base, "GET", agent.PathJWKS, "", nil, map[string]string{"If-None-Match": etag}); again.status != 304 || len(again.body) != 0 {
		t.Fatalf("If-None-Match: %d", again.status)
	}
	if other := do(t, cl, base, "GET", agent.PathJWKS, "", nil, map[string]string{"If-None-Match": `"other"`}); other.status != 200 {
		t.Fatalf("If-None-Match of another ETag: %d", other.status)
	}
	// The socket serves the same document.
	if _, sockTag, err := a.local.JWKS(e.ctx); err != nil || sockTag != etag {
		t.Fatalf("JWKS on the socket: %s, %v", sockTag, err)
	}

	disc := do(t, cl, base, "GET", agent.PathDiscovery, "", nil, nil)
	var d identity.Discovery
	if err := json.Unmarshal(disc.body, &d); err != nil || d.JWKSURI != base+agent.PathJWKS || disc.header.Get("Cache-Control") == "" {
		t.Fatalf("discovery %s: %v", disc.body, err)
	}

	// A third-party library reads the JWKS and verifies the node's token.
	keys, err := jwk.Parse(got.body)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Parse([]byte(m.Token), jwt.WithKeySet(keys), jwt.WithValidate(true), jwt.WithAudience("third-party"))
	if err != nil {
		t.Fatalf("jwx refused the node's token: %v", err)
	}
	if tok.Subject() != a.ID().String() {
		t.Fatalf("jwx read sub %q", tok.Subject())
	}
}
