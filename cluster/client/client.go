// Package client talks to the HTTPS API of keymesh root servers. The CLI and
// the end-to-end tests use it; other programs may too.
//
// A Client is made from a Config naming one server, the CA to trust and,
// for admin calls, a credential (a PEM file with a client certificate chain
// and its key). Any server will do: followers forward writes to the leader.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
)

// Config names the server and the trust material.
type Config struct {
	// Server is host:port or an https:// URL of any root server.
	Server string
	// CAFile is a PEM file with the AS root certificate(s) to trust.
	CAFile string
	// CAPEM is used instead of CAFile when set.
	CAPEM []byte
	// CAHash pins the AS root by its hash (sha256:...) when no CA is known
	// yet: a node's first contact. Used only when CAFile and CAPEM are empty.
	CAHash string
	// Credential is a PEM file with a client certificate chain and its key;
	// empty for unauthenticated calls.
	Credential string
	// Certificate is used instead of Credential when set (a node agent's
	// certificate held in memory).
	Certificate *tls.Certificate
	// Token is a bearer token (a JWT minted by a member of the network, such
	// as the system admin token of bootstrap) sent with every call.
	Token string
	// Timeout bounds each call. Default 15s; blocking queries add their wait.
	Timeout time.Duration
}

// Client is an API client for one root server.
type Client struct {
	base    *url.URL
	http    *http.Client
	timeout time.Duration
	token   string
}

// ErrNoServer is returned when no server address was given.
var ErrNoServer = errors.New("client: no server address; pass --server or set KEYMESH_SERVER (or --data-dir of a local server)")

// New makes a client. It reads the CA and the credential at once so that a
// wrong path fails here with a clear message.
func New(cfg Config) (*Client, error) {
	if cfg.Server == "" {
		return nil, ErrNoServer
	}
	raw := cfg.Server
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	base, err := url.Parse(raw)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("client: server %q is not host:port or an https URL", cfg.Server)
	}
	if base.Scheme != "https" {
		return nil, fmt.Errorf("client: server %q must use https", cfg.Server)
	}
	var tlsCfg *tls.Config
	caPEM := cfg.CAPEM
	switch {
	case caPEM == nil && cfg.CAFile == "" && cfg.CAHash != "":
		if tlsCfg, err = ca.PinnedTLSConfig(cfg.CAHash, base.Hostname(), nil); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	case caPEM == nil && cfg.CAFile == "":
		return nil, errors.New("client: no CA to trust; pass --ca-file or set KEYMESH_CA_FILE (or --data-dir of a local server)")
	default:
		if caPEM == nil {
			if caPEM, err = os.ReadFile(cfg.CAFile); err != nil {
				return nil, fmt.Errorf("client: CA file: %w", err)
			}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("client: CA file %s holds no PEM certificate", cfg.CAFile)
		}
		// The server must be a root server of the network, not any
		// holder of a certificate under the anchor (a node's).
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, VerifyConnection: ca.RootServerVerifier}
	}
	if cfg.Certificate != nil {
		tlsCfg.Certificates = []tls.Certificate{*cfg.Certificate}
	} else if cfg.Credential != "" {
		cert, err := ca.LoadCredential(cfg.Credential)
		if err != nil {
			return nil, err
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 15 * time.Second
	}
	return &Client{
		token:   strings.TrimSpace(cfg.Token),
		base:    base,
		http:    &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 128}},
		timeout: cfg.Timeout,
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Server is the base URL of the server this client talks to.
func (c *Client) Server() string { return c.base.String() }

// do sends one call and decodes a 2xx answer into out. Error answers come
// back as *api.APIError.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) (http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.doNoTimeout(ctx, method, path, query, in, out)
}

func (c *Client) doNoTimeout(ctx context.Context, method, path string, query url.Values, in, out any) (http.Header, error) {
	status, header, b, err := c.send(ctx, method, path, query, in)
	if err != nil {
		return header, err
	}
	if status/100 != 2 {
		return header, apiError(status, header, b)
	}
	if out == nil {
		return header, nil
	}
	if bp, ok := out.(*[]byte); ok {
		*bp = b
		return header, nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return header, fmt.Errorf("client: answer to %s %s: %w", method, path, err)
	}
	return header, nil
}

// send makes one HTTP exchange and returns the status and body.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, in any) (int, http.Header, []byte, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return 0, nil, nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, resp.Header, nil, fmt.Errorf("client: reading answer to %s %s: %w", method, path, err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// apiError turns an error answer into *api.APIError.
func apiError(status int, header http.Header, b []byte) error {
	var eb struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	e := &api.APIError{Status: status, Code: "http", Message: http.StatusText(status)}
	if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
	}
	if secs, err := strconv.Atoi(header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return e
}

// ErrNoLeader is returned by Health when the server answers but knows no
// leader; the cluster is electing one or has lost its quorum.
var ErrNoLeader = errors.New("client: the server knows no leader; the cluster is electing one or has lost its quorum")

// Health returns the server's health. A server that answers but knows no
// leader (HTTP 503) returns its Health and ErrNoLeader.
func (c *Client) Health(ctx context.Context) (api.Health, error) {
	var h api.Health
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	status, _, b, err := c.send(ctx, http.MethodGet, "/v1/sys/health", nil, nil)
	switch {
	case err != nil:
		return h, err
	case status == http.StatusOK, status == http.StatusServiceUnavailable:
		if err := json.Unmarshal(b, &h); err != nil {
			return h, fmt.Errorf("client: health answer: %w", err)
		}
		if status != http.StatusOK {
			return h, ErrNoLeader
		}
		return h, nil
	default:
		return h, apiError(status, nil, b)
	}
}

// Status returns the answering server's view of the cluster.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	_, err := c.do(ctx, http.MethodGet, "/v1/cluster/status", nil, nil, &s)
	return s, err
}

// RemoveServer removes a (dead) root server from the cluster.
func (c *Client) RemoveServer(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/cluster/servers/"+url.PathEscape(name), nil, nil, nil)
	return err
}

// CreateJoinToken makes a join token; the secret is in the answer only.
func (c *Client) CreateJoinToken(ctx context.Context, req api.CreateJoinTokenRequest) (api.CreatedJoinToken, error) {
	var out api.CreatedJoinToken
	_, err := c.do(ctx, http.MethodPost, "/v1/join-tokens", nil, req, &out)
	return out, err
}

// JoinTokens lists join tokens without their secrets.
func (c *Client) JoinTokens(ctx context.Context) ([]api.JoinTokenInfo, error) {
	var out []api.JoinTokenInfo
	_, err := c.do(ctx, http.MethodGet, "/v1/join-tokens", nil, nil, &out)
	return out, err
}

// RevokeJoinToken revokes a join token by its id.
func (c *Client) RevokeJoinToken(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/join-tokens/"+url.PathEscape(id), nil, nil, nil)
	return err
}

// Revoke commits a revocation.
func (c *Client) Revoke(ctx context.Context, req api.RevokeRequest) (api.RevokeResponse, error) {
	var out api.RevokeResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/revocations", nil, req, &out)
	return out, err
}

// Revocations lists revocations (of one kind when kind is not empty). With
// consistent, the answer reflects every write acknowledged before the call.
func (c *Client) Revocations(ctx context.Context, kind string, consistent bool) ([]fsm.Revocation, error) {
	q := url.Values{}
	if kind != "" {
		q.Set("kind", kind)
	}
	if consistent {
		q.Set("consistent", "true")
	}
	var out []fsm.Revocation
	_, err := c.do(ctx, http.MethodGet, "/v1/revocations", q, nil, &out)
	return out, err
}

// Revocation looks one revocation up; found is false when it does not exist.
func (c *Client) Revocation(ctx context.Context, kind, id string, consistent bool) (rev fsm.Revocation, found bool, err error) {
	q := url.Values{}
	if consistent {
		q.Set("consistent", "true")
	}
	_, err = c.do(ctx, http.MethodGet, "/v1/revocations/"+url.PathEscape(kind)+"/"+url.PathEscape(id), q, nil, &rev)
	if errors.Is(err, api.ErrNotFound) {
		return rev, false, nil
	}
	return rev, err == nil, err
}

// Bundle returns the PEM bundle of AS roots and issuing intermediates.
func (c *Client) Bundle(ctx context.Context) ([]byte, error) {
	var out []byte
	_, err := c.do(ctx, http.MethodGet, "/v1/ca/bundle", nil, nil, &out)
	return out, err
}

// Metrics returns the server's metrics in the Prometheus text format
// (GET /v1/sys/metrics).
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var out []byte
	_, err := c.do(ctx, http.MethodGet, "/v1/sys/metrics", nil, nil, &out)
	return out, err
}

// Trust runs a blocking query for a follower at index: it returns once
// the state index passes index, or after wait, with the trust.Delta since
// index (a full document for index 0, with full, or when the server's
// change history no longer covers index).
func (c *Client) Trust(ctx context.Context, index uint64, wait time.Duration, full bool) (trust.Delta, error) {
	q := url.Values{}
	q.Set("index", strconv.FormatUint(index, 10))
	q.Set("wait", wait.String())
	if full {
		q.Set("full", "true")
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout+wait)
	defer cancel()
	var out trust.Delta
	_, err := c.doNoTimeout(ctx, http.MethodGet, "/v1/trust", q, nil, &out)
	return out, err
}

// Register asks for a node certificate. With a valid token the answer
// carries the certificate chain (HTTP 201); without, the registration is
// pending (HTTP 202) until an operator approves it.
func (c *Client) Register(ctx context.Context, req api.RegisterRequest) (api.RegistrationResponse, error) {
	var out api.RegistrationResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/registrations", nil, req, &out)
	return out, err
}

// Collect asks for the certificate of a registration, proving possession of
// its key.
func (c *Client) Collect(ctx context.Context, id string, req api.CollectRequest) (api.RegistrationResponse, error) {
	var out api.RegistrationResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/registrations/"+url.PathEscape(id)+"/collect", nil, req, &out)
	return out, err
}

// Registrations lists registrations (of one status when status is not
// empty).
func (c *Client) Registrations(ctx context.Context, status string, consistent bool) ([]api.RegistrationInfo, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	if consistent {
		q.Set("consistent", "true")
	}
	var out []api.RegistrationInfo
	_, err := c.do(ctx, http.MethodGet, "/v1/registrations", q, nil, &out)
	return out, err
}

// Approve approves a pending registration.
func (c *Client) Approve(ctx context.Context, id string) (api.RegistrationResponse, error) {
	return c.ApproveRequest(ctx, id, api.ApproveRequest{})
}

// ApproveRequest is Approve with every field of the request (another
// principal for the node).
func (c *Client) ApproveRequest(ctx context.Context, id string, req api.ApproveRequest) (api.RegistrationResponse, error) {
	var out api.RegistrationResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/registrations/"+url.PathEscape(id)+"/approve", nil, req, &out)
	return out, err
}

// RotateSeal seals the AS root key under a new seal key held by every
// current root server.
func (c *Client) RotateSeal(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodPost, "/v1/cluster/seal/rotate", nil, struct{}{}, nil)
	return err
}

// Deny denies a pending registration.
func (c *Client) Deny(ctx context.Context, id, reason string) (api.RegistrationResponse, error) {
	var out api.RegistrationResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/registrations/"+url.PathEscape(id)+"/deny", nil, api.DenyRequest{Reason: reason}, &out)
	return out, err
}

// Renew renews the certificate the client presents (a node's).
func (c *Client) Renew(ctx context.Context, csr []byte) (api.CertResponse, error) {
	var out api.CertResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/certs/renew", nil, api.RenewRequest{CSR: csr}, &out)
	return out, err
}

// CRL returns the DER CRL of the answering server's issuer.
func (c *Client) CRL(ctx context.Context) ([]byte, error) {
	var out []byte
	_, err := c.do(ctx, http.MethodGet, "/v1/ca/crl", nil, nil, &out)
	return out, err
}

// Policy returns the policy set in force and its version.
func (c *Client) Policy(ctx context.Context) (api.PolicyDoc, error) {
	var out api.PolicyDoc
	_, err := c.do(ctx, http.MethodGet, "/v1/policies", nil, nil, &out)
	return out, err
}

// SetPolicy replaces the policy set if its version is still expect.
func (c *Client) SetPolicy(ctx context.Context, text string, expect uint64) (api.PolicyDoc, error) {
	return c.SetPolicyRequest(ctx, api.SetPolicyRequest{Text: text, ExpectVersion: expect})
}

// SetPolicyRequest is SetPolicy with every field of the request (force).
func (c *Client) SetPolicyRequest(ctx context.Context, req api.SetPolicyRequest) (api.PolicyDoc, error) {
	var out api.PolicyDoc
	_, err := c.do(ctx, http.MethodPut, "/v1/policies", nil, req, &out)
	return out, err
}

// Verify asks the root server to verify a token against its replica.
func (c *Client) Verify(ctx context.Context, token, aud string) (api.Verification, error) {
	return c.VerifyRequest(ctx, api.TokenRequest{Token: token, Audience: aud})
}

// VerifyRequest is Verify with every field of the request (a peer
// certificate for bound tokens).
func (c *Client) VerifyRequest(ctx context.Context, req api.TokenRequest) (api.Verification, error) {
	var out api.Verification
	_, err := c.do(ctx, http.MethodPost, "/v1/verify", nil, req, &out)
	return out, err
}

// Authorize asks which actions a token's principal may take.
func (c *Client) Authorize(ctx context.Context, token, aud string) (api.Verification, error) {
	var out api.Verification
	_, err := c.do(ctx, http.MethodPost, "/v1/authorize", nil, api.TokenRequest{Token: token, Audience: aud}, &out)
	return out, err
}

// JWKS returns the JWKS document and its ETag.
func (c *Client) JWKS(ctx context.Context) ([]byte, string, error) {
	var out []byte
	h, err := c.do(ctx, http.MethodGet, "/.well-known/jwks.json", nil, nil, &out)
	return out, h.Get("ETag"), err
}

// RouteAuths lists the route authorizations (with consistent, as of every
// write acknowledged before the call).
func (c *Client) RouteAuths(ctx context.Context, consistent bool) ([]fsm.RouteAuth, error) {
	q := url.Values{}
	if consistent {
		q.Set("consistent", "true")
	}
	var out []fsm.RouteAuth
	_, err := c.do(ctx, http.MethodGet, "/v1/routes/authorizations", q, nil, &out)
	return out, err
}

// AuthorizeRoute lets origins originate a prefix (added to those it has).
func (c *Client) AuthorizeRoute(ctx context.Context, req api.RouteAuthRequest) (api.RouteAuthResponse, error) {
	var out api.RouteAuthResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/routes/authorizations", nil, req, &out)
	return out, err
}

// UnauthorizeRoute removes origins from a prefix's authorization, or the
// whole authorization when origins is empty.
func (c *Client) UnauthorizeRoute(ctx context.Context, prefix string, origins []string) (api.RouteAuthResponse, error) {
	q := url.Values{"prefix": {prefix}}
	for _, o := range origins {
		q.Add("origin", o)
	}
	var out api.RouteAuthResponse
	_, err := c.do(ctx, http.MethodDelete, "/v1/routes/authorizations", q, nil, &out)
	return out, err
}

// Network returns the network's name, AS number (0: none set) and
// whether its membership is exclusive.
func (c *Client) Network(ctx context.Context) (api.NetworkInfo, error) {
	var out api.NetworkInfo
	_, err := c.do(ctx, http.MethodGet, "/v1/network", nil, nil, &out)
	return out, err
}

// SetNetworkASN sets the network's AS number, which route authorizations
// made without one of their own take.
func (c *Client) SetNetworkASN(ctx context.Context, asn uint32) (api.NetworkInfo, error) {
	var out api.NetworkInfo
	_, err := c.do(ctx, http.MethodPut, "/v1/network/asn", nil, api.NetworkASNRequest{ASN: asn}, &out)
	return out, err
}

// SetNetworkExclusive turns the network's exclusive membership on or off:
// with it on, the network's nodes refuse peers that are members of other
// networks too.
func (c *Client) SetNetworkExclusive(ctx context.Context, exclusive bool) (api.NetworkInfo, error) {
	var out api.NetworkInfo
	_, err := c.do(ctx, http.MethodPut, "/v1/network/exclusive", nil, api.NetworkExclusiveRequest{Exclusive: &exclusive}, &out)
	return out, err
}

// Anchors lists the trust anchors: this network's and federated ones.
func (c *Client) Anchors(ctx context.Context) ([]api.AnchorInfo, error) {
	var out []api.AnchorInfo
	_, err := c.do(ctx, http.MethodGet, "/v1/trust/anchors", nil, nil, &out)
	return out, err
}

// PutAnchor anchors a federated network by its AS roots (PEM) and accepts
// its members.
func (c *Client) PutAnchor(ctx context.Context, network string, rootsPEM []byte, endpoints ...string) (api.AnchorResponse, error) {
	var out api.AnchorResponse
	_, err := c.do(ctx, http.MethodPut, "/v1/trust/anchors/"+url.PathEscape(network), nil,
		api.AnchorRequest{RootsPEM: string(rootsPEM), Endpoints: endpoints}, &out)
	return out, err
}

// DeleteAnchor stops accepting a federated network and drops its anchor.
func (c *Client) DeleteAnchor(ctx context.Context, network string) (api.AnchorResponse, error) {
	var out api.AnchorResponse
	_, err := c.do(ctx, http.MethodDelete, "/v1/trust/anchors/"+url.PathEscape(network), nil, nil, &out)
	return out, err
}

// GossipKeys returns the gossip keyring with its keys (a node, over mutual
// TLS). With index, it waits up to wait for a keyring newer than index.
func (c *Client) GossipKeys(ctx context.Context, index uint64, wait time.Duration) (api.GossipKeyring, error) {
	q := url.Values{}
	q.Set("index", strconv.FormatUint(index, 10))
	q.Set("wait", wait.String())
	ctx, cancel := context.WithTimeout(ctx, c.timeout+wait)
	defer cancel()
	var out api.GossipKeyring
	_, err := c.doNoTimeout(ctx, http.MethodGet, "/v1/gossip/keys", q, nil, &out)
	return out, err
}

// GossipKeyring returns the gossip keyring without its keys.
func (c *Client) GossipKeyring(ctx context.Context) (api.GossipKeyring, error) {
	var out api.GossipKeyring
	_, err := c.do(ctx, http.MethodGet, "/v1/gossip/keyring", nil, nil, &out)
	return out, err
}

// RotateGossipKey starts a rotation of the gossip key and returns the
// keyring with the key being installed.
func (c *Client) RotateGossipKey(ctx context.Context) (api.GossipKeyring, error) {
	var out api.GossipKeyring
	_, err := c.do(ctx, http.MethodPost, "/v1/gossip/rotate", nil, struct{}{}, &out)
	return out, err
}
