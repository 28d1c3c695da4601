package agent_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity"
)

// TestTokensVerifyWithOtherLibrariesFromTheJWKSEndpoint: a token a node
// minted under its own key verifies with go-spiffe (jwtsvid against a
// bundle built from the root's /.well-known/jwks.json) and with jwx reading
// the same endpoint — no keymesh code on the verifying side.
func TestTokensVerifyWithOtherLibrariesFromTheJWKSEndpoint(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, _, err := e.join("minter", e.token(api.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	tok, claims, err := minterOf(t, dir, nil).Mint(identity.MintRequest{Audience: []string{"peer.example"}, TTL: 5 * time.Minute, Principal: identity.PrincipalNode})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rootsPool(t, e)}}}
	defer hc.CloseIdleConnections()
	url := "https://" + e.srv.APIAddr() + "/.well-known/jwks.json"
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}

	bundle, err := jwtbundle.Parse(spiffeid.RequireTrustDomainFromString(network), body)
	if err != nil {
		t.Fatalf("go-spiffe cannot read our JWKS: %v", err)
	}
	svid, err := jwtsvid.ParseAndValidate(tok, bundle, []string{"peer.example"})
	if err != nil {
		t.Fatalf("go-spiffe refused a node token: %v", err)
	}
	if svid.ID.String() != claims.Subject {
		t.Fatalf("go-spiffe read subject %s, want %s", svid.ID, claims.Subject)
	}

	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatalf("jwx cannot read our JWKS: %v", err)
	}
	parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithAudience("peer.example"))
	if err != nil {
		t.Fatalf("jwx refused a node token: %v", err)
	}
	if parsed.Subject() != claims.Subject || parsed.JwtID() != claims.ID {
		t.Fatalf("jwx read sub %s jti %s", parsed.Subject(), parsed.JwtID())
	}
	// And a token signed by a key the endpoint does not publish fails in both.
	stranger := newEnv(t, cluster.Limits{})
	sdir, _, err := stranger.join("stranger", stranger.token(api.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := minterOf(t, sdir, nil).Mint(identity.MintRequest{Audience: []string{"peer.example"}, TTL: 5 * time.Minute, Principal: identity.PrincipalNode})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.Parse([]byte(other), jwt.WithKeySet(set)); err == nil {
		t.Fatal("jwx accepted a token of a key not in the JWKS")
	}
}
