package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/hashicorp/go-hclog"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/policy"
)

// Error codes of the API's one error shape: {"error":{"code":..,"message":..}}.
const (
	codeBadRequest     = "bad_request"
	codeTooLarge       = "too_large"
	codeUnauthorized   = "unauthorized"
	codeForbidden      = "forbidden"
	codeNotFound       = "not_found"
	codeConflict       = "conflict"
	codeNotLeader      = "not_leader"
	codeNoLeader       = "no_leader"
	codeUnknownOutcome = "unknown_outcome"
	codeTimeout        = "timeout"
	codeInternal       = "internal"
	codeShutdown       = "shutting_down"
	codeTooMany        = "too_many_requests"
	// CodeNodeRevoked, CodeCertRevoked and CodeKeyRevoked refuse callers
	// whose node, certificate (or a certificate it chains through) or key
	// is revoked; agents stop retrying on them.
	CodeNodeRevoked = "node_revoked"
	CodeCertRevoked = "cert_revoked"
	CodeKeyRevoked  = "key_revoked"
	// CodeEscalation refuses a caller that would hand out or take away a
	// principal that may do more than it may itself.
	CodeEscalation = "escalation_refused"
)

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type errorEnvelope struct {
	Error errorBody `json:"error"`
}

// APIError is an error answer of a root server's API.
type APIError struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is the server's Retry-After on a 429 or 503, zero if none.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

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
	writeJSON(w, status, errorEnvelope{Error: errorBody{Code: code, Message: msg}})
}

// writeErr maps an error of the write or read path to a status and code.
func (s *Server) writeErr(w http.ResponseWriter, err error) {
	var ce *fsm.CommandError
	var ae *APIError
	var mbe *http.MaxBytesError
	var rl *rateLimited
	switch {
	case errors.As(err, &rl):
		writeTooMany(w, rl.wait, rl.what)
	case errors.As(err, &ae):
		writeError(w, ae.Status, ae.Code, ae.Message)
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("request body exceeds the %d-byte limit", mbe.Limit))
	case errors.As(err, &ce):
		writeError(w, commandStatus(err), fsm.ErrorCode(err), err.Error())
	case errors.Is(err, ErrNoLeader):
		writeError(w, http.StatusServiceUnavailable, codeNoLeader, err.Error())
	case errors.Is(err, ErrUnknownOutcome):
		writeError(w, http.StatusServiceUnavailable, codeUnknownOutcome, err.Error())
	case errors.Is(err, ErrShutdown):
		writeError(w, http.StatusServiceUnavailable, codeShutdown, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, codeTimeout, "the request timed out; the cluster may be electing a leader, try again")
	default:
		s.log.Error("request failed", "error", err)
		writeError(w, http.StatusInternalServerError, codeInternal, err.Error())
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
		writeError(w, http.StatusUnsupportedMediaType, codeBadRequest, "send the request body as application/json")
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.Limits.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.writeErr(w, err)
			return false
		}
		writeError(w, http.StatusBadRequest, codeBadRequest, "cannot read the request body: "+err.Error())
		return false
	}
	if err := DecodeStrict(body, v); err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return false
	}
	return true
}

// ErrEmptyBody: a request body holds nothing.
var ErrEmptyBody = errors.New("request body is empty; send a JSON object")

// DecodeStrict decodes exactly one JSON value of b into v: names match
// case-sensitively, duplicate and unknown members are refused, and so is
// anything after the value or invalid UTF-8.
func DecodeStrict(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return ErrEmptyBody
	}
	if err := jsonv2.Unmarshal(b, v, jsonv2.RejectUnknownMembers(true)); err != nil {
		return fmt.Errorf("request body is not valid JSON for this call: %w", err)
	}
	return nil
}

// errNoCredential: a request carries no client certificate.
var errNoCredential = errors.New("no client certificate")

// errOtherNetwork: the client certificate is of another network.
var errOtherNetwork = errors.New("the client certificate is of another network")

// callerID returns the verified identity of the client certificate, or why
// there is none: no certificate, another network, or a certificate chain
// that CheckChain refuses (a revoked certificate anywhere in it, a revoked
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
	if err := CheckChain(s.store, chain); err != nil {
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
	s.route(mux, "GET /v1/trust", policy.TrustRead, s.handleTrust)
	s.route(mux, "GET /v1/registrations", policy.RegistrationList, s.handleListRegistrations)
	s.routeDeciding(mux, "POST /v1/registrations/{id}/approve", policy.RegistrationApprove, s.handleApprove)
	s.route(mux, "POST /v1/registrations/{id}/deny", policy.RegistrationDeny, s.handleDeny)
	s.routeCert(mux, "POST /v1/certs/renew", policy.CertRenew, s.handleRenew)
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
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("no API call %s %s; see the README for the API", r.Method, r.URL.Path))
	})
	return s.withTimeout(mux)
}

// withTimeout bounds every request but blocking queries, which bound
// themselves by their wait parameter.
func (s *Server) withTimeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/trust" {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.Limits.RequestTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// serveAPI serves the HTTPS API on ln until Shutdown.
func (s *Server) serveAPI(ln net.Listener) {
	s.http = &http.Server{
		Handler:           s.handler(),
		TLSConfig:         s.tls.serverConfig(false),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    s.opts.Limits.MaxHeaderBytes,
		ErrorLog:          s.log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("API server stopped", "error", err)
			select {
			case s.fatal <- fmt.Errorf("cluster: API server: %w", err):
			default:
			}
		}
	}()
}
