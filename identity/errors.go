package identity

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every refusal of [Verifier.Verify] is a [*VerifyError] whose
// Err wraps exactly one of the sentinels below, so callers test with errors.Is
// and read the stable code from VerifyError.Reason.
var (
	// ErrTooLarge: the token is longer than VerifierConfig.MaxTokenSize.
	ErrTooLarge = errors.New("identity: token too large")
	// ErrMalformed: not a compact JWS of three base64url parts with a strict JSON header.
	ErrMalformed = errors.New("identity: malformed token")
	// ErrClaims: the claims are not strict JSON or a required claim is missing or ill-formed.
	ErrClaims = errors.New("identity: invalid claims")
	// ErrAlgNotAllowed: the header alg is not ES256, ES384 or EdDSA.
	ErrAlgNotAllowed = errors.New("identity: algorithm not allowed")
	// ErrAlgKeyMismatch: the header alg does not fit the key (e.g. ES256 on a P-384 key).
	ErrAlgKeyMismatch = errors.New("identity: algorithm does not fit the key")
	// ErrUnknownKey: no key with the header kid, even after a refresh.
	ErrUnknownKey = errors.New("identity: unknown key id")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("identity: bad signature")
	// ErrKeyState: the key is staged (not yet usable) or retired before the token was issued.
	ErrKeyState = errors.New("identity: key not usable")
	// ErrKeyCertMismatch: the key's x5c leaf does not hold the key, or the key's owner is not the certificate's subject.
	ErrKeyCertMismatch = errors.New("identity: key and certificate disagree")
	// ErrChain: the key's certificate chain does not verify to a root of its network.
	ErrChain = errors.New("identity: certificate chain not trusted")
	// ErrNetworkNotAccepted: the key's network is not on the access list.
	ErrNetworkNotAccepted = errors.New("identity: network not accepted")
	// ErrKeyExpired: the key or its certificate had expired when the token was issued,
	// or the token would outlive them.
	ErrKeyExpired = errors.New("identity: key or certificate expired")
	// ErrRevoked is wrapped by the four revocation errors below.
	ErrRevoked = errors.New("identity: revoked")
	// ErrTokenRevoked: the token's jti is revoked.
	ErrTokenRevoked = fmt.Errorf("identity: token %w", ErrRevoked)
	// ErrKeyRevoked: the signing key's kid is revoked.
	ErrKeyRevoked = fmt.Errorf("identity: key %w", ErrRevoked)
	// ErrCertRevoked: a certificate of the key's chain (leaf or intermediate) is revoked.
	ErrCertRevoked = fmt.Errorf("identity: certificate %w", ErrRevoked)
	// ErrNodeRevoked: the node that owns the key is revoked.
	ErrNodeRevoked = fmt.Errorf("identity: node %w", ErrRevoked)
	// ErrExpired: now is past exp (plus skew).
	ErrExpired = errors.New("identity: token expired")
	// ErrNotYetValid: now is before nbf (minus skew).
	ErrNotYetValid = errors.New("identity: token not yet valid")
	// ErrIssuedInFuture: iat is after now (plus skew), or after exp.
	ErrIssuedInFuture = errors.New("identity: token issued in the future")
	// ErrAudience: no audience of the token is one the verifier answers to.
	ErrAudience = errors.New("identity: audience not accepted")
	// ErrIssuer: iss differs from sub.
	ErrIssuer = errors.New("identity: issuer differs from subject")
	// ErrSubject: sub differs from the SPIFFE ID of the key's certificate.
	ErrSubject = errors.New("identity: subject differs from the key's certificate")
	// ErrPrincipal: the principal claim is not one of the known principals.
	ErrPrincipal = errors.New("identity: unknown principal")
	// ErrPrincipalNotGranted: the key's owner may not claim this principal.
	ErrPrincipalNotGranted = errors.New("identity: principal not granted to the key's owner")
	// ErrBinding: the token's cnf thumbprint is not the presented certificate's.
	ErrBinding = errors.New("identity: certificate binding does not match")
	// ErrBindingMissing: the token is bound but no certificate was presented,
	// or a bound token was required and the token is unbound.
	ErrBindingMissing = errors.New("identity: certificate binding missing")
)

// reasonOf maps each sentinel to its stable code (VerifyError.Reason).
func reasonOf(sentinel error) string {
	switch sentinel {
	case ErrTooLarge:
		return "too_large"
	case ErrMalformed:
		return "malformed"
	case ErrClaims:
		return "claims"
	case ErrAlgNotAllowed:
		return "alg_not_allowed"
	case ErrAlgKeyMismatch:
		return "alg_key_mismatch"
	case ErrUnknownKey:
		return "unknown_key"
	case ErrSignature:
		return "bad_signature"
	case ErrKeyState:
		return "key_state"
	case ErrKeyCertMismatch:
		return "key_cert_mismatch"
	case ErrChain:
		return "untrusted_chain"
	case ErrNetworkNotAccepted:
		return "network_not_accepted"
	case ErrKeyExpired:
		return "key_expired"
	case ErrTokenRevoked:
		return "revoked_token"
	case ErrKeyRevoked:
		return "revoked_key"
	case ErrCertRevoked:
		return "revoked_cert"
	case ErrNodeRevoked:
		return "revoked_node"
	case ErrExpired:
		return "expired"
	case ErrNotYetValid:
		return "not_yet_valid"
	case ErrIssuedInFuture:
		return "issued_in_future"
	case ErrAudience:
		return "audience"
	case ErrIssuer:
		return "issuer_subject"
	case ErrSubject:
		return "subject_cert"
	case ErrPrincipal:
		return "principal_unknown"
	case ErrPrincipalNotGranted:
		return "principal_not_granted"
	case ErrBinding:
		return "binding_mismatch"
	case ErrBindingMissing:
		return "binding_missing"
	}
	return "refused"
}

// VerifyError is the error of every refused token. Reason is a stable,
// machine-readable code (e.g. "expired", "revoked_key") fit for an API error
// body; Err wraps the sentinel and, where useful, a detail.
type VerifyError struct {
	Reason string
	Err    error
}

func (e *VerifyError) Error() string {
	return "identity: token refused (" + e.Reason + "): " + e.Err.Error()
}

// Unwrap returns the wrapped sentinel (and detail).
func (e *VerifyError) Unwrap() error { return e.Err }

// refuse builds a *VerifyError for sentinel, with an optional detail.
func refuse(sentinel error, format string, args ...any) *VerifyError {
	err := sentinel
	if format != "" {
		err = fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
	}
	return &VerifyError{Reason: reasonOf(sentinel), Err: err}
}

// wrapped builds a *VerifyError from an error that already wraps sentinel.
func wrapped(sentinel error, err error) *VerifyError {
	return &VerifyError{Reason: reasonOf(sentinel), Err: err}
}

// refuseErr builds a *VerifyError for sentinel wrapping a cause.
func refuseErr(sentinel error, cause error) *VerifyError {
	return &VerifyError{Reason: reasonOf(sentinel), Err: fmt.Errorf("%w: %w", sentinel, cause)}
}

// Errors of the other parts of the package.
var (
	// ErrInvalidJWK: a JWK or JWKS document is refused by the strict decoder.
	ErrInvalidJWK = errors.New("identity: invalid JWK")
	// ErrUnsupportedKey: the key is not ECDSA P-256/P-384 or Ed25519.
	ErrUnsupportedKey = errors.New("identity: unsupported key type")
	// ErrInvalidSPIFFEID: a SPIFFE ID is not spiffe://<network>/{root,admin,node}/<name>.
	ErrInvalidSPIFFEID = errors.New("identity: invalid SPIFFE ID")
	// ErrInvalidConfig: a MinterConfig or VerifierConfig is incomplete or inconsistent.
	ErrInvalidConfig = errors.New("identity: invalid config")
	// ErrMint: a token cannot be minted (bad request, or the certificate is expiring).
	ErrMint = errors.New("identity: cannot mint token")
)
