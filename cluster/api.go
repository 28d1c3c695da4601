package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hashicorp/go-hclog"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
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
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
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
	case errors.Is(err, fsm.ErrTokenNotFound), errors.Is(err, fsm.ErrTokenExpired),
		errors.Is(err, fsm.ErrTokenExhausted), errors.Is(err, fsm.ErrTokenRevoked),
		errors.Is(err, fsm.ErrTokenConstraint):
		return http.StatusForbidden
	default:
		return http.StatusBadRequest
	}
}

// decode reads one JSON object of at most Limits.MaxBodyBytes into v,
// refusing unknown fields and trailing data. On failure it writes the error
// and returns false.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, codeBadRequest, "send the request body as application/json")
		return false
	}
	body := http.MaxBytesReader(w, r.Body, s.opts.Limits.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.writeErr(w, err)
			return false
		}
		if errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, codeBadRequest, "request body is empty; send a JSON object")
			return false
		}
		writeError(w, http.StatusBadRequest, codeBadRequest, "request body is not valid JSON for this call: "+err.Error())
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.writeErr(w, err)
			return false
		}
		writeError(w, http.StatusBadRequest, codeBadRequest, "request body must hold exactly one JSON object")
		return false
	}
	return true
}

// Why a request carries no usable identity.
var (
	errNoCredential = errors.New("no client certificate")
	errOtherNetwork = errors.New("the client certificate is of another network")
	errCertRevoked  = errors.New("the client certificate is revoked")
	errNodeRevoked  = errors.New("the node is revoked")
)

// caller returns the verified identity of the client certificate, or why
// there is none: no certificate, another network, a revoked certificate or
// a revoked node.
func (s *Server) caller(r *http.Request) (ca.Identity, error) {
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
	if _, revoked := s.store.Revoked(fsm.RevocationCert, fsm.FormatSerial(chain[0].SerialNumber)); revoked {
		return id, errCertRevoked
	}
	if id.Kind == ca.KindNode {
		if _, revoked := s.store.Revoked(fsm.RevocationNode, id.Name); revoked {
			return id, errNodeRevoked
		}
	}
	return id, nil
}

// Roles of callers. Issue-level authorization with Cedar replaces this table
// when it lands; until then admins and root servers may do every call.
type role int

const (
	rolePublic role = iota // anyone, no credential
	roleMember             // any certificate of this network
	roleAdmin              // an admin credential or a root server
	roleRoot               // root servers only (internal calls)
)

func (s *Server) allowed(id ca.Identity, err error, need role) (int, string, bool) {
	switch {
	case need == rolePublic:
		return 0, "", true
	case errors.Is(err, errNoCredential):
		return http.StatusUnauthorized, "this call needs a client certificate of network " + s.network + " (pass --credential or set KEYMESH_CREDENTIAL)", false
	case err != nil:
		return http.StatusForbidden, err.Error(), false
	}
	switch need {
	case roleMember:
		return 0, "", true
	case roleAdmin:
		if id.Kind == ca.KindAdmin || id.Kind == ca.KindRoot {
			return 0, "", true
		}
	case roleRoot:
		if id.Kind == ca.KindRoot {
			return 0, "", true
		}
	}
	return http.StatusForbidden, fmt.Sprintf("%s may not make this call", id), false
}

// route registers a handler behind the role check and the request timeout.
func (s *Server) route(mux *http.ServeMux, pattern string, need role, h http.HandlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		id, err := s.caller(r)
		if status, msg, pass := s.allowed(id, err, need); !pass {
			code := codeUnauthorized
			if status == http.StatusForbidden {
				code = codeForbidden
			}
			writeError(w, status, code, msg)
			return
		}
		h(w, r)
	})
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	s.route(mux, "GET /v1/sys/health", rolePublic, s.handleHealth)
	s.route(mux, "GET /v1/ca/bundle", rolePublic, s.handleBundle)
	s.route(mux, "POST /v1/cluster/join", rolePublic, s.handleJoin)
	s.route(mux, "GET /v1/cluster/status", roleAdmin, s.handleStatus)
	s.route(mux, "GET /v1/cluster/peers", roleAdmin, s.handlePeers)
	s.route(mux, "DELETE /v1/cluster/servers/{name}", roleAdmin, s.handleRemoveServer)
	s.route(mux, "POST /v1/join-tokens", roleAdmin, s.handleCreateJoinToken)
	s.route(mux, "GET /v1/join-tokens", roleAdmin, s.handleListJoinTokens)
	s.route(mux, "DELETE /v1/join-tokens/{id}", roleAdmin, s.handleRevokeJoinToken)
	s.route(mux, "POST /v1/revocations", roleAdmin, s.handleRevoke)
	s.route(mux, "GET /v1/revocations", roleAdmin, s.handleListRevocations)
	s.route(mux, "GET /v1/revocations/{kind}/{id}", roleMember, s.handleGetRevocation)
	s.route(mux, "GET /v1/trust", roleMember, s.handleTrust)
	s.route(mux, "GET /v1/ca/crl", rolePublic, s.handleCRL)
	s.route(mux, "GET /v1/ca/crl/{issuer}", rolePublic, s.handleCRL)
	s.route(mux, "POST /v1/registrations", rolePublic, s.handleRegister)
	s.route(mux, "POST /v1/registrations/{id}/collect", rolePublic, s.handleCollect)
	s.route(mux, "GET /v1/registrations", roleAdmin, s.handleListRegistrations)
	s.route(mux, "POST /v1/registrations/{id}/approve", roleAdmin, s.handleApprove)
	s.route(mux, "POST /v1/registrations/{id}/deny", roleAdmin, s.handleDeny)
	s.route(mux, "POST /v1/certs/renew", roleMember, s.handleRenew)
	s.route(mux, "POST /v1/internal/apply", roleRoot, s.handleInternalApply)
	s.route(mux, "POST /v1/internal/read-index", roleRoot, s.handleInternalReadIndex)
	s.route(mux, "POST /v1/internal/add-voter", roleRoot, s.handleInternalAddVoter)
	s.route(mux, "POST /v1/internal/remove-server", roleRoot, s.handleInternalRemove)
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
