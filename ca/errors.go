package ca

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Sentinel errors. Every error this package returns matches one of them with
// errors.Is; the typed errors below carry the details.
var (
	// ErrKeyType: the key is not one of the allowed types (P-256, P-384, Ed25519).
	ErrKeyType = errors.New("ca: key type not allowed (use P-256, P-384 or Ed25519)")
	// ErrCSR: a certificate signing request was refused by CheckCSR.
	ErrCSR = errors.New("ca: certificate request rejected")
	// ErrHashFormat: a CA hash (pin) is not "sha256:" followed by 64 hex digits.
	ErrHashFormat = errors.New("ca: malformed CA hash")
	// ErrHashMismatch: the certificate presented does not match the pinned CA hash.
	ErrHashMismatch = errors.New("ca: CA hash mismatch")
	// ErrSealed: sealed data could not be opened: wrong seal key, wrong
	// network, or the data was changed.
	ErrSealed = errors.New("ca: cannot open sealed data (wrong seal key, wrong network, or data tampered with)")
	// ErrSealKey: a seal key is not 32 bytes.
	ErrSealKey = errors.New("ca: seal key must be 32 bytes")
	// ErrKeyFileMode: a secret file can be read by group or others.
	ErrKeyFileMode = errors.New("ca: secret file open to group or others")
	// ErrNetwork: a network name is not a valid host name.
	ErrNetwork = errors.New("ca: invalid network name")
	// ErrName: a root server, admin or node name is not [A-Za-z0-9._-]{1,128}.
	ErrName = errors.New("ca: invalid name")
	// ErrIdentity: a certificate or string does not carry a well-formed keymesh identity.
	ErrIdentity = errors.New("ca: invalid identity")
	// ErrHost: a host for a certificate is neither an IP address nor a DNS name.
	ErrHost = errors.New("ca: invalid host")
	// ErrPEM: PEM input is malformed or holds the wrong kind of block.
	ErrPEM = errors.New("ca: malformed PEM")
	// ErrTooLarge: an input is larger than this package accepts.
	ErrTooLarge = errors.New("ca: input too large")
	// ErrIssuer: the issuing certificate and key cannot sign (not a CA, key
	// does not match, expired, other network).
	ErrIssuer = errors.New("ca: unusable issuer")
	// ErrValidity: a requested validity is out of range.
	ErrValidity = errors.New("ca: invalid validity")
	// ErrChain: a certificate does not chain to the trust anchors for the usage asked.
	ErrChain = errors.New("ca: certificate chain does not verify")
	// ErrAnchor: certificates offered as a trust anchor are refused.
	ErrAnchor = errors.New("ca: not a trust anchor of the network")
	// ErrNotRootServer: a server presented a valid certificate of the
	// network that does not name a root server (a node's, an operator's):
	// keymesh clients talk to root servers only.
	ErrNotRootServer = errors.New("ca: the server is not a root server of the network")
	// ErrCRL: a revocation list is malformed, not signed by its issuer, or out of date.
	ErrCRL = errors.New("ca: invalid revocation list")
	// ErrNoTime: the current time was not given (a zero time.Time).
	ErrNoTime = errors.New("ca: current time not given (now is the zero time)")
)

// KeyFileModeError reports a secret file (private key, seal key) with any
// permission bit for group or others. It matches ErrKeyFileMode.
type KeyFileModeError struct {
	Path string
	Mode os.FileMode
}

func (e *KeyFileModeError) Error() string {
	return fmt.Sprintf("ca: %s has mode %04o, open to group or others; run `chmod 600 %s` and try again",
		e.Path, e.Mode.Perm(), e.Path)
}

func (e *KeyFileModeError) Unwrap() error { return ErrKeyFileMode }

// CSRError reports why CheckCSR refused a request. It matches ErrCSR and,
// where one applies, a more specific cause (ErrKeyType, ErrTooLarge, or the
// crypto/x509 error).
type CSRError struct {
	Reason string // what is wrong, in plain words, with what to do next
	Err    error  // the cause, may be nil
}

func (e *CSRError) Error() string {
	if e.Err != nil {
		return "ca: certificate request rejected: " + e.Reason + ": " + strings.TrimPrefix(e.Err.Error(), "ca: ")
	}
	return "ca: certificate request rejected: " + e.Reason
}

func (e *CSRError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrCSR}
	}
	return []error{ErrCSR, e.Err}
}

// HashMismatchError reports a pinned CA hash that the presented certificates
// do not match. It matches ErrHashMismatch.
type HashMismatchError struct {
	Want string   // the pin, normalised
	Got  []string // hashes of the CA certificates that were presented
}

func (e *HashMismatchError) Error() string {
	got := "no CA certificate"
	if len(e.Got) > 0 {
		got = strings.Join(e.Got, ", ")
	}
	return fmt.Sprintf("ca: CA hash mismatch: pinned %s, the server presented %s; check the --ca-hash value (printed by `keymesh root bootstrap`) and the address you dialed",
		e.Want, got)
}

func (e *HashMismatchError) Unwrap() error { return ErrHashMismatch }

// ChainError reports a certificate that does not verify against the trust
// anchors. It matches ErrChain and the crypto/x509 error that caused it.
type ChainError struct {
	Subject string // the leaf's identity or subject
	Err     error
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("ca: certificate chain of %s does not verify: %v", e.Subject, e.Err)
}

func (e *ChainError) Unwrap() []error { return []error{ErrChain, e.Err} }
