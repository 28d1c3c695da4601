package agent

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/routing"
	"github.com/keymesh/keymesh/session"
	"github.com/keymesh/keymesh/session/gossip"
)

// Paths of the local API.
const (
	PathMint      = "/v1/mint"
	PathVerify    = "/v1/verify"
	PathStatus    = "/v1/status"
	PathJWKS      = "/.well-known/jwks.json"
	PathDiscovery = "/.well-known/openid-configuration"
	PathPeers     = "/v1/peers"
	PathRoutes    = "/v1/routes"
	PathMembers   = "/v1/members"
	PathMetrics   = "/metrics"
)

// MaxLocalBody bounds a request body of the local API.
const MaxLocalBody = 64 << 10

// jwksCacheControl is how long clients may cache the JWKS and the
// discovery document (as the root servers say).
const jwksCacheControl = "public, max-age=30"

// Error codes of the local API, in {"error":{"code","message"}}.
const (
	CodeBadRequest  = "bad_request"
	CodeTooLarge    = "too_large"
	CodeNotFound    = "not_found"
	CodeMethod      = "method_not_allowed"
	CodeForbidden   = "forbidden"
	CodeMintRefused = "mint_refused"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
	// CodeRevoked answers every call of an agent whose node, certificate
	// or key is revoked, until it stops.
	CodeRevoked = "node_revoked"
)

// Audience is one audience or several; it decodes from a JSON string or an
// array of strings and encodes as a string when there is one.
type Audience []string

// UnmarshalJSON accepts "a" or ["a","b"].
func (a *Audience) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = Audience{s}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	*a = list
	return nil
}

// MarshalJSON writes one audience as a string, several as an array.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return stdjson.Marshal(a[0])
	}
	return stdjson.Marshal([]string(a))
}

// MintRequest is the body of POST /v1/mint.
type MintRequest struct {
	// Audience names who the token is for (required).
	Audience Audience `json:"aud"`
	// TTL is the token's lifetime as a Go duration ("10m"); default 10m, at
	// most 24h, and never past the node certificate's NotAfter.
	TTL string `json:"ttl,omitempty"`
	// BindCert binds the token to the node's TLS certificate
	// (cnf.x5t#S256, RFC 8705).
	BindCert bool `json:"bind_cert,omitempty"`
	// Principal is the role the token claims; default the node's principal
	// in the trust state (NODE when the state does not know the node yet).
	Principal string `json:"principal,omitempty"`
}

// MintResponse is the answer of POST /v1/mint.
type MintResponse struct {
	Token     string    `json:"token"`
	KID       string    `json:"kid"`
	ExpiresAt time.Time `json:"expires_at"`
	// Claims are the token's claims in their token form.
	Claims stdjson.RawMessage `json:"claims"`
}

// VerifyRequest is the body of POST /v1/verify.
type VerifyRequest struct {
	// Token is the compact JWS (required).
	Token string `json:"token"`
	// Audience the token must name; default the node's SPIFFE ID.
	Audience Audience `json:"aud,omitempty"`
	// PeerCert is the PEM certificate the token was presented with; a
	// bound token must match it.
	PeerCert string `json:"peer_cert,omitempty"`
	// RequireBinding refuses unbound tokens.
	RequireBinding bool `json:"require_binding,omitempty"`
}

// VerifyResponse is the answer of POST /v1/verify: valid with what the token
// says, or not valid with a stable reason (identity.VerifyError.Reason).
type VerifyResponse struct {
	Valid     bool               `json:"valid"`
	Reason    string             `json:"reason,omitempty"`
	Message   string             `json:"message,omitempty"`
	Node      string             `json:"node,omitempty"`
	Network   string             `json:"network,omitempty"`
	Principal string             `json:"principal,omitempty"`
	KID       string             `json:"kid,omitempty"`
	Claims    stdjson.RawMessage `json:"claims,omitempty"`
	// Index is the trust state index the answer rests on.
	Index uint64 `json:"index"`
}

// StatusResponse is the answer of GET /v1/status.
type StatusResponse struct {
	Node    string `json:"node"`
	Network string `json:"network"`
	// Accepted are the networks whose members this node accepts: its
	// network's access list, narrowed by --accept-network.
	Accepted     []string       `json:"accepted_networks"`
	KID          string         `json:"kid"`
	CertSerial   string         `json:"cert_serial"`
	CertNotAfter time.Time      `json:"cert_not_after"`
	Trust        FollowerStatus `json:"trust"`
	// Sessions counts the peering sessions established; Routes is the
	// stage of the route key and the RIB sizes (nil without sessions).
	Sessions int                `json:"sessions"`
	Routes   *routing.KeyStatus `json:"routes,omitempty"`
}

// ErrorBody is the shape of every error answer.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// jwksDoc is the encoded JWKS of one trust index.
type jwksDoc struct {
	index uint64
	body  []byte
	etag  string
}

// localAPI serves the local API of one Agent. On the unix socket it mints;
// on TCP it only verifies and publishes (anyone on the host can reach a
// loopback port).
type localAPI struct {
	a    *Agent
	mint bool
	jwks *atomic.Pointer[jwksDoc] // shared by the socket and TCP handlers
}

func (h *localAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(PathMint, h.only(http.MethodPost, h.handleMint))
	mux.HandleFunc(PathVerify, h.only(http.MethodPost, h.handleVerify))
	mux.HandleFunc(PathStatus, h.only(http.MethodGet, h.handleStatus))
	mux.HandleFunc(PathJWKS, h.only(http.MethodGet, h.handleJWKS))
	mux.HandleFunc(PathDiscovery, h.only(http.MethodGet, h.handleDiscovery))
	mux.HandleFunc(PathPeers, h.only(http.MethodGet, h.handlePeers))
	mux.HandleFunc(PathPeers+"/{id}/reset", h.only(http.MethodPost, h.handleResetPeer))
	mux.HandleFunc(PathMetrics, h.only(http.MethodGet, h.handleMetrics))
	mux.HandleFunc(PathMembers, h.only(http.MethodGet, h.handleMembers))
	mux.HandleFunc("GET "+PathRoutes, h.handleRoutes)
	mux.HandleFunc("POST "+PathRoutes, h.handleAnnounce)
	mux.HandleFunc("POST "+PathRoutes+"/withdraw", h.handleWithdraw)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeLocalError(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no call %s %s on the node agent", r.Method, r.URL.Path))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.a.Revoked(); err != nil {
			writeLocalError(w, http.StatusForbidden, CodeRevoked, fmt.Sprintf("node %s is revoked (%v); this agent stops and serves nothing more; register the node again under a new id with `keymesh node join`",
				h.a.state.NodeID, err))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// only answers 405 to any other method than method.
func (h *localAPI) only(method string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			writeLocalError(w, http.StatusMethodNotAllowed, CodeMethod, fmt.Sprintf("%s takes %s, not %s", r.URL.Path, method, r.Method))
			return
		}
		next(w, r)
	}
}

func writeLocalJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := stdjson.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		writeLocalError(w, http.StatusInternalServerError, CodeInternal, "cannot encode the answer")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func writeLocalError(w http.ResponseWriter, status int, code, msg string) {
	var body ErrorBody
	body.Error.Code, body.Error.Message = code, msg
	b, _ := stdjson.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// errBodyTooLarge is what decodeLocal returns for a body over MaxLocalBody.
var errBodyTooLarge = fmt.Errorf("request body larger than %d bytes", MaxLocalBody)

// decodeLocal strictly decodes one JSON object: case-sensitive names, no
// duplicate or unknown members, valid UTF-8, nothing after it.
func decodeLocal(body []byte, v any) error {
	if len(body) > MaxLocalBody {
		return errBodyTooLarge
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("request body is empty; send a JSON object")
	}
	if err := json.Unmarshal(body, v, json.RejectUnknownMembers(true)); err != nil {
		return fmt.Errorf("request body is not valid JSON for this call: %w", err)
	}
	return nil
}

// readBody reads and decodes a request body, answering the error itself.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeLocalError(w, http.StatusUnsupportedMediaType, CodeBadRequest, "send the request body as application/json")
		return false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxLocalBody))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeLocalError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, errBodyTooLarge.Error())
		return false
	}
	if err != nil {
		writeLocalError(w, http.StatusBadRequest, CodeBadRequest, "cannot read the request body")
		return false
	}
	if err := decodeLocal(b, v); err != nil {
		writeLocalError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return false
	}
	return true
}

func (h *localAPI) handleMint(w http.ResponseWriter, r *http.Request) {
	if !h.mint {
		writeLocalError(w, http.StatusForbidden, CodeForbidden, "tokens are minted on the agent's unix socket only ("+SocketPath(h.a.cfg.DataDir)+")")
		return
	}
	var req MintRequest
	if !readBody(w, r, &req) {
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			writeLocalError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("ttl %q is not a positive duration like 10m", req.TTL))
			return
		}
		ttl = d
	}
	tok, kid, claims, err := h.a.Mint(identity.MintRequest{Audience: req.Audience, TTL: ttl,
		Principal: identity.Principal(req.Principal)}, req.BindCert)
	switch {
	case errors.Is(err, identity.ErrMint):
		writeLocalError(w, http.StatusBadRequest, CodeMintRefused, err.Error())
		return
	case err != nil:
		writeLocalError(w, http.StatusServiceUnavailable, CodeUnavailable, err.Error())
		return
	}
	cj, err := claims.MarshalJSON()
	if err != nil {
		writeLocalError(w, http.StatusInternalServerError, CodeInternal, "cannot encode the claims")
		return
	}
	writeLocalJSON(w, http.StatusOK, MintResponse{Token: tok, KID: kid, ExpiresAt: claims.Expiry.UTC(), Claims: cj})
}

func (h *localAPI) handleVerify(w http.ResponseWriter, r *http.Request) {
	var req VerifyRequest
	if !readBody(w, r, &req) {
		return
	}
	vr := identity.VerifyRequest{Token: req.Token, Audience: req.Audience, RequireBinding: req.RequireBinding}
	if req.PeerCert != "" {
		certs, err := ca.ParseCertsPEM([]byte(req.PeerCert))
		if err != nil || len(certs) != 1 {
			writeLocalError(w, http.StatusBadRequest, CodeBadRequest, "peer_cert must hold exactly one PEM certificate")
			return
		}
		vr.PeerCert = certs[0]
	}
	index := h.a.follower.Index()
	v, err := h.a.verifier.Verify(r.Context(), vr)
	if err != nil {
		out := VerifyResponse{Reason: "refused", Message: err.Error(), Index: index}
		var ve *identity.VerifyError
		if errors.As(err, &ve) {
			out.Reason = ve.Reason
		}
		writeLocalJSON(w, http.StatusOK, out)
		return
	}
	cj, err := v.Claims.MarshalJSON()
	if err != nil {
		writeLocalError(w, http.StatusInternalServerError, CodeInternal, "cannot encode the claims")
		return
	}
	writeLocalJSON(w, http.StatusOK, VerifyResponse{Valid: true, Node: v.Node, Network: v.Network,
		Principal: string(v.Claims.Principal), KID: v.KID, Claims: cj, Index: index})
}

func (h *localAPI) handleStatus(w http.ResponseWriter, r *http.Request) {
	out := StatusResponse{Node: h.a.state.NodeID, Network: h.a.state.Network, Trust: h.a.follower.Status(), Accepted: []string{h.a.state.Network}}
	if an, err := trust.Anchors(h.a.view(), h.a.state.Network); err == nil {
		out.Accepted = an.Accepted
	}
	if nc, err := h.a.creds.current(); err == nil {
		out.KID, out.CertSerial, out.CertNotAfter = nc.minter.KID(), fsm.FormatSerial(nc.leaf.SerialNumber), nc.leaf.NotAfter.UTC()
	}
	if s := h.a.Speaker(); s != nil {
		for _, p := range s.Peers() {
			if p.State == session.Established {
				out.Sessions++
			}
		}
	}
	if rt := h.a.Router(); rt != nil {
		if ks, err := rt.Keys(r.Context()); err == nil {
			out.Routes = &ks
		}
	}
	writeLocalJSON(w, http.StatusOK, out)
}

// PeersResponse is the answer of GET /v1/peers.
type PeersResponse struct {
	Node    string `json:"node"`
	Network string `json:"network"`
	// Listen is where the agent takes sessions, "" if it does not.
	Listen string               `json:"listen,omitempty"`
	Peers  []session.PeerStatus `json:"peers"`
}

// MembersResponse is the answer of GET /v1/members: the gossip node
// graph.
type MembersResponse struct {
	Node    string `json:"node"`
	Network string `json:"network"`
	// Gossip is where the agent gossips, "" if it does not.
	Gossip string `json:"gossip,omitempty"`
	// KeyringIndex is the version of the gossip keyring held (0: none).
	KeyringIndex uint64          `json:"keyring_index"`
	Members      []gossip.Member `json:"members"`
}

func (h *localAPI) handleMembers(w http.ResponseWriter, r *http.Request) {
	if !h.a.gossipWanted() {
		writeLocalError(w, http.StatusNotFound, CodeNotFound, "this agent does not gossip (start it with --gossip-addr HOST:PORT)")
		return
	}
	kr, _ := h.a.gossipKeys.get()
	out := MembersResponse{Node: h.a.state.NodeID, Network: h.a.state.Network, Gossip: h.a.cfg.GossipAddr, KeyringIndex: kr.Index, Members: []gossip.Member{}}
	if g := h.a.Gossip(); g != nil {
		out.Gossip, out.Members = g.Advertised(), g.Members()
	}
	writeLocalJSON(w, http.StatusOK, out)
}

func (h *localAPI) handlePeers(w http.ResponseWriter, r *http.Request) {
	out := PeersResponse{Node: h.a.state.NodeID, Network: h.a.state.Network, Listen: h.a.SessionAddr(), Peers: []session.PeerStatus{}}
	if s := h.a.Speaker(); s != nil {
		out.Peers = s.Peers()
	}
	writeLocalJSON(w, http.StatusOK, out)
}

// handleResetPeer ends a session and connects again (socket only: it
// changes something).
func (h *localAPI) handleResetPeer(w http.ResponseWriter, r *http.Request) {
	if !h.mint {
		writeLocalError(w, http.StatusForbidden, CodeForbidden, "resetting a session is done on the agent's socket, not over TCP")
		return
	}
	s := h.a.Speaker()
	if s == nil {
		writeLocalError(w, http.StatusNotFound, CodeNotFound, "this agent runs no peering sessions (start it with --listen or --peer)")
		return
	}
	id := r.PathValue("id")
	if err := s.Reset(id); errors.Is(err, session.ErrUnknownPeer) {
		writeLocalError(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no session with %s; `keymesh peers list` shows the peers", id))
		return
	} else if err != nil {
		writeLocalError(w, http.StatusInternalServerError, CodeInternal, err.Error())
		return
	}
	writeLocalJSON(w, http.StatusOK, map[string]string{"reset": id})
}

// handleMetrics serves the agent's metrics in the Prometheus text format.
func (h *localAPI) handleMetrics(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	st := h.a.follower.Status()
	vs := h.a.verifier.Stats()
	for _, m := range []struct {
		name, kind, help, labels string
		v                        uint64
	}{
		{"keymesh_agent_trust_index", "gauge", "Index of the trust state this agent holds.", "", st.Index},
		{"keymesh_agent_trust_persisted_index", "gauge", "Index of the trust state on disk.", "", st.Persisted},
		{"keymesh_agent_trust_full_documents_total", "counter", "Full documents fetched because a delta did not apply.", "", uint64(st.FullDocuments)},
		{"keymesh_agent_verifier_cache_hits_total", "counter", "Token verifications answered from the cache.", "", vs.Hits},
		{"keymesh_agent_verifier_cache_misses_total", "counter", "Token verifications done in full.", "", vs.Misses},
	} {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s%s %d\n", m.name, m.help, m.name, m.kind, m.name, m.labels, m.v)
	}
	if s := h.a.Speaker(); s != nil {
		if err := s.WritePrometheus(&b); err != nil {
			writeLocalError(w, http.StatusInternalServerError, CodeInternal, err.Error())
			return
		}
	}
	if rt := h.a.Router(); rt != nil {
		if err := rt.WritePrometheus(&b); err != nil {
			writeLocalError(w, http.StatusInternalServerError, CodeInternal, err.Error())
			return
		}
	}
	h.a.writeGossipMetrics(&b)
	if srv := h.a.rtr.Load(); srv != nil {
		srv.WriteMetrics(&b)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}

// jwksDoc returns the encoded JWKS of the current trust document: its
// active and retiring keys (staged keys are not published).
func (h *localAPI) jwksDoc() (*jwksDoc, error) {
	cur := h.a.follower.Current()
	var index uint64
	if cur != nil {
		index = cur.Index()
	}
	if d := h.jwks.Load(); d != nil && d.index == index {
		return d, nil
	}
	set := identity.JWKS{Keys: []identity.JWK{}}
	if cur != nil {
		for _, rec := range cur.JWKS() {
			if rec.State != fsm.JWKActive && rec.State != fsm.JWKRetiring {
				continue
			}
			j, err := identity.ParseJWK(rec.Key, identity.Limits{})
			if err != nil {
				h.a.log.Warn("JWKS entry of the trust state unusable; not published", "kid", rec.KID, "error", err)
				continue
			}
			set.Keys = append(set.Keys, j)
		}
	}
	body, err := set.Encode()
	if err != nil {
		return nil, err
	}
	d := &jwksDoc{index: index, body: body, etag: identity.ETag(body)}
	h.jwks.Store(d)
	return d, nil
}

// etagMatches reports whether an If-None-Match header names etag.
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

func (h *localAPI) handleJWKS(w http.ResponseWriter, r *http.Request) {
	d, err := h.jwksDoc()
	if err != nil {
		writeLocalError(w, http.StatusInternalServerError, CodeInternal, err.Error())
		return
	}
	w.Header().Set("Cache-Control", jwksCacheControl)
	w.Header().Set("ETag", d.etag)
	if m := r.Header.Get("If-None-Match"); m != "" && etagMatches(m, d.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Write(d.body)
}

func (h *localAPI) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	issuer := "http://" + host
	var buf bytes.Buffer
	enc := stdjson.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(identity.NewDiscovery(issuer, issuer+PathJWKS))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", jwksCacheControl)
	w.Write(buf.Bytes())
}

// handleRoutes lists the RIBs (?peer=ID: that neighbour's routes only).
func (h *localAPI) handleRoutes(w http.ResponseWriter, r *http.Request) {
	out, err := h.a.routes(r.Context(), r.URL.Query().Get("peer"))
	if h.routingError(w, err) {
		return
	}
	writeLocalJSON(w, http.StatusOK, out)
}

// handleAnnounce originates a route (socket only).
func (h *localAPI) handleAnnounce(w http.ResponseWriter, r *http.Request) {
	if !h.mint {
		writeLocalError(w, http.StatusForbidden, CodeForbidden, "routes are announced on the agent's socket, not over TCP")
		return
	}
	var req AnnounceRequest
	if !readBody(w, r, &req) {
		return
	}
	out, err := h.a.announce(r.Context(), req)
	if h.routingError(w, err) {
		return
	}
	writeLocalJSON(w, http.StatusOK, out)
}

// handleWithdraw stops originating a route (socket only).
func (h *localAPI) handleWithdraw(w http.ResponseWriter, r *http.Request) {
	if !h.mint {
		writeLocalError(w, http.StatusForbidden, CodeForbidden, "routes are withdrawn on the agent's socket, not over TCP")
		return
	}
	var req WithdrawRequest
	if !readBody(w, r, &req) {
		return
	}
	if h.routingError(w, h.a.withdraw(r.Context(), req)) {
		return
	}
	writeLocalJSON(w, http.StatusOK, map[string]string{"withdrawn": req.NLRI})
}

// routingError answers err, if any; true when it did.
func (h *localAPI) routingError(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrNoRouting):
		writeLocalError(w, http.StatusNotFound, CodeNotFound, err.Error())
	case errors.Is(err, routing.ErrNoRoute):
		writeLocalError(w, http.StatusNotFound, CodeNotFound, err.Error()+"; `keymesh routes list` shows this node's routes")
	case errors.Is(err, routing.ErrNLRI), errors.Is(err, routing.ErrMalformed):
		writeLocalError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
	default:
		writeLocalError(w, http.StatusServiceUnavailable, CodeUnavailable, err.Error())
	}
	return true
}
