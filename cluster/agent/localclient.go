package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/routing"
)

// ErrNoAgent: nothing answers on the agent's socket.
var ErrNoAgent = errors.New("agent: no agent answers on the node's socket; start it with `keymesh node run --data-dir DIR`")

// LocalAPIError is an error answer of the local API.
type LocalAPIError struct {
	Status  int
	Code    string
	Message string
}

func (e *LocalAPIError) Error() string {
	return fmt.Sprintf("agent: %s (%d %s)", e.Message, e.Status, e.Code)
}

// maxLocalAnswer bounds an answer of the local API.
const maxLocalAnswer = 8 << 20

// LocalClient talks to a node agent's local API over its unix socket (or
// a loopback TCP address). The CLI uses it for `keymesh token mint` and
// `keymesh token verify`.
type LocalClient struct {
	base string
	http *http.Client
}

// NewLocalClient returns a client of the agent serving on the unix socket
// at socket (SocketPath(dataDir)). Nothing is dialled until the first call.
func NewLocalClient(socket string) *LocalClient {
	d := net.Dialer{Timeout: 2 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "unix", socket)
			if err != nil {
				return nil, fmt.Errorf("%w (%s): %w", ErrNoAgent, socket, err)
			}
			return c, nil
		},
		MaxIdleConnsPerHost: 16,
	}
	return &LocalClient{base: "http://agent", http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// NewLocalClientTCP returns a client of the agent's loopback TCP listener
// (host:port): verify, JWKS and status; no minting there.
func NewLocalClientTCP(addr string) *LocalClient {
	return &LocalClient{base: "http://" + addr, http: &http.Client{Timeout: 30 * time.Second}}
}

// Close releases idle connections.
func (c *LocalClient) Close() { c.http.CloseIdleConnections() }

// call makes one request; 2xx answers are decoded into out (a *[]byte
// takes the raw body), others become *LocalAPIError.
func (c *LocalClient) call(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLocalAnswer))
	if err != nil {
		return resp.Header, fmt.Errorf("agent: reading the answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &LocalAPIError{Status: resp.StatusCode, Code: "http", Message: http.StatusText(resp.StatusCode)}
		var eb ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
			e.Code, e.Message = eb.Error.Code, eb.Error.Message
		}
		return resp.Header, e
	}
	if bp, ok := out.(*[]byte); ok {
		*bp = b
		return resp.Header, nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return resp.Header, fmt.Errorf("agent: answer to %s %s: %w", method, path, err)
	}
	return resp.Header, nil
}

// Mint asks the agent for a token under the node's key.
func (c *LocalClient) Mint(ctx context.Context, req MintRequest) (MintResponse, error) {
	var out MintResponse
	_, err := c.call(ctx, http.MethodPost, PathMint, req, &out)
	return out, err
}

// Verify asks the agent whether a token is valid. A refused token is not an
// error: the answer says Valid false and why.
func (c *LocalClient) Verify(ctx context.Context, req VerifyRequest) (VerifyResponse, error) {
	var out VerifyResponse
	_, err := c.call(ctx, http.MethodPost, PathVerify, req, &out)
	return out, err
}

// Status returns the agent's node, key and trust follower status.
func (c *LocalClient) Status(ctx context.Context) (StatusResponse, error) {
	var out StatusResponse
	_, err := c.call(ctx, http.MethodGet, PathStatus, nil, &out)
	return out, err
}

// Peers returns the agent's peering sessions.
func (c *LocalClient) Peers(ctx context.Context) (PeersResponse, error) {
	var out PeersResponse
	_, err := c.call(ctx, http.MethodGet, PathPeers, nil, &out)
	return out, err
}

// Members returns the agent's gossip node graph.
func (c *LocalClient) Members(ctx context.Context) (MembersResponse, error) {
	var out MembersResponse
	_, err := c.call(ctx, http.MethodGet, PathMembers, nil, &out)
	return out, err
}

// ResetPeer ends the session with peer id, which connects again.
func (c *LocalClient) ResetPeer(ctx context.Context, id string) error {
	_, err := c.call(ctx, http.MethodPost, PathPeers+"/"+url.PathEscape(id)+"/reset", nil, &map[string]string{})
	return err
}

// Metrics returns the agent's metrics in the Prometheus text format.
func (c *LocalClient) Metrics(ctx context.Context) ([]byte, error) {
	var b []byte
	_, err := c.call(ctx, http.MethodGet, PathMetrics, nil, &b)
	return b, err
}

// JWKS returns the agent's JWKS document, strictly decoded, with its ETag.
func (c *LocalClient) JWKS(ctx context.Context) (identity.JWKS, string, error) {
	var b []byte
	h, err := c.call(ctx, http.MethodGet, PathJWKS, nil, &b)
	if err != nil {
		return identity.JWKS{}, "", err
	}
	set, err := identity.DecodeJWKS(b, identity.Limits{})
	if err != nil {
		return identity.JWKS{}, "", fmt.Errorf("agent: JWKS from the agent: %w", err)
	}
	return set, h.Get("ETag"), nil
}

// Routes lists the agent's RIBs (peer: that neighbour's routes only).
func (c *LocalClient) Routes(ctx context.Context, peer string) (RoutesResponse, error) {
	path := PathRoutes
	if peer != "" {
		path += "?peer=" + url.QueryEscape(peer)
	}
	var out RoutesResponse
	_, err := c.call(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// Announce has the agent originate a route.
func (c *LocalClient) Announce(ctx context.Context, req AnnounceRequest) (routing.RouteStatus, error) {
	var out routing.RouteStatus
	_, err := c.call(ctx, http.MethodPost, PathRoutes, req, &out)
	return out, err
}

// Withdraw has the agent stop originating a route.
func (c *LocalClient) Withdraw(ctx context.Context, nlri string) error {
	var out map[string]string
	_, err := c.call(ctx, http.MethodPost, PathRoutes+"/withdraw", WithdrawRequest{NLRI: nlri}, &out)
	return err
}
