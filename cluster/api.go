package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/policy"
	"github.com/keymesh/keymesh/identity/trust"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSONStatus(w, status, v)
}

// writeJSONCached writes v with the Cache-Control the caller set.
func writeJSONCached(w http.ResponseWriter, v any) { writeJSONStatus(w, http.StatusOK, v) }

func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.ErrorEnvelope{Error: api.ErrorBody{Code: code, Message: msg}})
}

// writeErr maps an error of the write or read path to a status and code.
func (s *Server) writeErr(w http.ResponseWriter, err error) {
	var ce *fsm.CommandError
	var ae *api.APIError
	var mbe *http.MaxBytesError
	var rl *rateLimited
	switch {
	case errors.As(err, &rl):
		writeTooMany(w, rl.wait, rl.what)
	case errors.As(err, &ae):
		writeError(w, ae.Status, ae.Code, ae.Message)
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, api.CodeTooLarge, fmt.Sprintf("request body exceeds the %d-byte limit", mbe.Limit))
	case errors.As(err, &ce):
		writeError(w, commandStatus(err), fsm.ErrorCode(err), err.Error())
	case errors.Is(err, ErrNoLeader):
		writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, err.Error())
	case errors.Is(err, ErrUnknownOutcome):
		writeError(w, http.StatusServiceUnavailable, api.CodeUnknownOutcome, err.Error())
	case errors.Is(err, ErrShutdown):
		writeError(w, http.StatusServiceUnavailable, api.CodeShutdown, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, api.CodeTimeout, "the request timed out; the cluster may be electing a leader, try again")
	default:
		s.log.Error("request failed", "error", err)
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
	}
}

// commandStatus is the HTTP status of a state machine rejection.
func commandStatus(err error) int {
	switch {
	case errors.Is(err, fsm.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, fsm.ErrExists), errors.Is(err, fsm.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, fsm.ErrLimit):
		return http.StatusTooManyRequests
	case errors.Is(err, fsm.ErrTokenNotFound), errors.Is(err, fsm.ErrTokenExpired),
		errors.Is(err, fsm.ErrTokenExhausted), errors.Is(err, fsm.ErrTokenRevoked),
		errors.Is(err, fsm.ErrTokenConstraint):
		return http.StatusForbidden
	default:
		return http.StatusBadRequest
	}
}

// decode reads one JSON object of at most Limits.MaxBodyBytes into v,
// strictly: member names match case-sensitively, duplicate and unknown
// members are refused, and so is trailing data or invalid UTF-8 (the
// token decoder's rules, for every request body). On failure it writes
// the error and returns false.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, api.CodeBadRequest, "send the request body as application/json")
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.Limits.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.writeErr(w, err)
			return false
		}
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "cannot read the request body: "+err.Error())
		return false
	}
	if err := api.DecodeStrict(body, v); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return false
	}
	return true
}

// errNoCredential: a request carries no client certificate.
var errNoCredential = errors.New("no client certificate")

// errOtherNetwork: the client certificate or token is of another network.
var errOtherNetwork = errors.New("the credential is of another network")

// callerID returns the verified identity of the client certificate, or why
// there is none: no certificate, another network, or a certificate chain
// that trust.CheckChain refuses (a revoked certificate anywhere in it, a revoked
// key or node).
func (s *Server) callerID(r *http.Request) (ca.Identity, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return ca.Identity{}, errNoCredential
	}
	chain := r.TLS.VerifiedChains[0]
	id, err := ca.IdentityOf(chain[0])
	if err != nil {
		return ca.Identity{}, fmt.Errorf("the client certificate names no keymesh identity: %w", err)
	}
	if id.Network != s.network {
		return ca.Identity{}, errOtherNetwork
	}
	if err := trust.CheckChain(s.store, chain); err != nil {
		return id, err
	}
	return id, nil
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	// Public: health, the CA, the JWKS, joins and registrations (which carry
	// their own credential: a join token or a proof of possession), and
	// token verification.
	s.route(mux, "GET /v1/sys/health", "", s.handleHealth)
	s.route(mux, "GET /v1/ca/bundle", "", s.handleBundle)
	s.route(mux, "GET /v1/ca/crl", "", s.handleCRL)
	s.route(mux, "GET /v1/ca/crl/{issuer}", "", s.handleCRL)
	s.route(mux, "GET /.well-known/jwks.json", "", s.handleJWKS)
	s.route(mux, "GET /.well-known/openid-configuration", "", s.handleDiscovery)
	s.route(mux, "POST /v1/cluster/join", "", s.handleJoin)
	s.route(mux, "POST /v1/registrations", "", s.handleRegister)
	s.route(mux, "POST /v1/registrations/{id}/collect", "", s.handleCollect)
	s.route(mux, "POST /v1/verify", "", s.handleVerify)
	s.route(mux, "POST /v1/authorize", "", s.handleAuthorize)
	// Decided by Cedar.
	s.route(mux, "GET /v1/cluster/status", policy.ClusterRead, s.handleStatus)
	s.route(mux, "GET /v1/sys/metrics", policy.ClusterRead, s.metrics.handler().ServeHTTP)
	s.route(mux, "GET /v1/cluster/peers", policy.ClusterRead, s.handlePeers)
	s.route(mux, "DELETE /v1/cluster/servers/{id}", policy.ClusterRemove, s.handleRemoveServer)
	s.route(mux, "POST /v1/cluster/seal/rotate", policy.CARotate, s.handleRotateSeal)
	s.routeDeciding(mux, "POST /v1/join-tokens", policy.TokenCreate, s.handleCreateJoinToken)
	s.route(mux, "GET /v1/join-tokens", policy.TokenList, s.handleListJoinTokens)
	s.route(mux, "DELETE /v1/join-tokens/{id}", policy.TokenRevoke, s.handleRevokeJoinToken)
	s.routeDeciding(mux, "POST /v1/revocations", policy.RevocationCreate, s.handleRevoke)
	s.route(mux, "GET /v1/revocations", policy.RevocationList, s.handleListRevocations)
	s.route(mux, "GET /v1/revocations/{kind}/{id}", policy.TrustRead, s.handleGetRevocation)
	s.routeDeciding(mux, "GET /v1/trust", policy.TrustRead, s.handleTrust)
	s.route(mux, "GET /v1/trust/anchors", policy.TrustRead, s.handleListAnchors)
	s.routeDeciding(mux, "PUT /v1/trust/anchors/{id}", policy.TrustWrite, s.handlePutAnchor)
	s.routeDeciding(mux, "DELETE /v1/trust/anchors/{id}", policy.TrustWrite, s.handleDeleteAnchor)
	s.route(mux, "GET /v1/routes/authorizations", policy.RouteAuthRead, s.handleListRouteAuths)
	s.route(mux, "POST /v1/routes/authorizations", policy.RouteAuthWrite, s.handleAuthorizeRoute)
	s.route(mux, "DELETE /v1/routes/authorizations", policy.RouteAuthWrite, s.handleUnauthorizeRoute)
	s.route(mux, "GET /v1/network", policy.RouteAuthRead, s.handleNetwork)
	s.route(mux, "PUT /v1/network/asn", policy.RouteAuthWrite, s.handleSetNetworkASN)
	s.routeDeciding(mux, "PUT /v1/network/exclusive", policy.TrustWrite, s.handleSetNetworkExclusive)
	s.route(mux, "GET /v1/registrations", policy.RegistrationList, s.handleListRegistrations)
	s.routeDeciding(mux, "POST /v1/registrations/{id}/approve", policy.RegistrationApprove, s.handleApprove)
	s.route(mux, "POST /v1/registrations/{id}/deny", policy.RegistrationDeny, s.handleDeny)
	s.routeCert(mux, "POST /v1/certs/renew", policy.CertRenew, s.handleRenew)
	s.routeCert(mux, "GET /v1/gossip/keys", policy.GossipKeys, s.handleGossipKeys)
	s.route(mux, "GET /v1/gossip/keyring", policy.ClusterRead, s.handleGossipKeyring)
	s.route(mux, "POST /v1/gossip/rotate", policy.CARotate, s.handleGossipRotate)
	s.route(mux, "GET /v1/policies", policy.PolicyRead, s.handleGetPolicy)
	s.routeDeciding(mux, "PUT /v1/policies", policy.PolicyWrite, s.handleSetPolicy)
	// Consensus plumbing between root servers.
	s.internal(mux, "POST /v1/internal/apply", s.handleInternalApply)
	s.internal(mux, "POST /v1/internal/read-index", s.handleInternalReadIndex)
	s.internal(mux, "POST /v1/internal/add-voter", s.handleInternalAddVoter)
	s.internal(mux, "POST /v1/internal/remove-server", s.handleInternalRemove)
	s.internal(mux, "POST /v1/internal/seal-key", s.handleInternalSealKey)
	s.internal(mux, "POST /v1/internal/seal-key/get", s.handleInternalGetSealKey)
	s.internal(mux, "POST /v1/internal/rotate-seal", s.handleInternalRotateSeal)
	s.internal(mux, "POST /v1/internal/gossip-rotate", s.handleInternalGossipRotate)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no API call %s %s; see the README for the API", r.Method, r.URL.Path))
	})
	return s.withTimeout(mux)
}

// withTimeout bounds every request but blocking queries, which bound
// themselves by their wait parameter.
func (s *Server) withTimeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/trust" || r.URL.Path == "/v1/gossip/keys" {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.Limits.RequestTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// serveAPI serves the HTTPS API on the bound listener until ctx ends, then
// stops accepting and lets requests in flight finish (blocking queries end
// at once: they watch the server's stop channel).
func (s *Server) serveAPI(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.handler(),
		TLSConfig:         s.tls.serverConfig(false),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    s.opts.Limits.MaxHeaderBytes,
		ErrorLog:          s.log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(s.apiLn, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("cluster: API server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.Limits.RequestTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}
