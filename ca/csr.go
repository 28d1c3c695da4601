package ca

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"net/url"
)

// MaxCSRSize is the largest DER certificate request CheckCSR accepts. A
// P-384 request with a few DNS names is well under 1 KiB.
const MaxCSRSize = 8 << 10

// CheckCSR parses a DER PKCS#10 request and checks it: at most MaxCSRSize
// bytes, no trailing data, a key of an allowed type (P-256, P-384, Ed25519;
// RSA of any size, P-224 and P-521 are refused), a signature algorithm of
// the SHA-2 family or Ed25519, and a valid self-signature, i.e. the
// requester holds the private key. The key type is checked before the
// signature, so an expensive key costs nothing.
//
// The subject, SANs and extensions of the request are not checked and must
// never be used: SignNode takes the identity from the approved registration.
// Errors are *CSRError and match ErrCSR.
func CheckCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, &CSRError{Reason: "empty request; send a DER-encoded PKCS#10 certificate request"}
	}
	if len(der) > MaxCSRSize {
		return nil, &CSRError{Reason: fmt.Sprintf("%d bytes, at most %d accepted", len(der), MaxCSRSize), Err: ErrTooLarge}
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, &CSRError{Reason: "not a DER-encoded PKCS#10 certificate request", Err: err}
	}
	if _, err := KeyTypeOf(csr.PublicKey); err != nil {
		return nil, &CSRError{Reason: "key type not allowed; make a P-256, P-384 or Ed25519 key", Err: err}
	}
	switch csr.SignatureAlgorithm {
	case x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512, x509.PureEd25519:
	default:
		return nil, &CSRError{Reason: fmt.Sprintf("signature algorithm %s not allowed; sign with ECDSA and SHA-256/384/512, or Ed25519", csr.SignatureAlgorithm)}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, &CSRError{Reason: "signature does not verify with the request's own key; make the request again with the node's key", Err: err}
	}
	return csr, nil
}

// NewCSR makes a DER certificate request for key. It names id and dnsNames
// so operators see what the node asks for when they approve it; the signed
// certificate takes its names from the registration, not from the request.
// rnd nil means crypto/rand.
func NewCSR(key crypto.Signer, id Identity, dnsNames []string, rnd io.Reader) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: no key", ErrKeyType)
	}
	if _, err := KeyTypeOf(key.Public()); err != nil {
		return nil, err
	}
	if err := id.Validate(); err != nil {
		return nil, err
	}
	for _, d := range dnsNames {
		if err := validateDNSName(d); err != nil {
			return nil, err
		}
	}
	tmpl := &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: id.Name},
		URIs:     []*url.URL{id.URI()},
		DNSNames: dnsNames,
	}
	der, err := x509.CreateCertificateRequest(randOrDefault(rnd), tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("ca: making certificate request: %w", err)
	}
	return der, nil
}

const pemCSR = "CERTIFICATE REQUEST"

// EncodeCSRPEM encodes a DER certificate request as PEM.
func EncodeCSRPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der})
}

// DecodeCSRPEM returns the DER of a single "CERTIFICATE REQUEST" PEM block.
// The request still has to pass CheckCSR.
func DecodeCSRPEM(b []byte) ([]byte, error) {
	if len(b) > 4*MaxCSRSize {
		return nil, &CSRError{Reason: fmt.Sprintf("PEM of %d bytes, at most %d accepted", len(b), 4*MaxCSRSize), Err: ErrTooLarge}
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != pemCSR || len(block.Headers) != 0 || len(trimSpace(rest)) != 0 {
		return nil, &CSRError{Reason: "expected exactly one PEM block of type \"CERTIFICATE REQUEST\"", Err: ErrPEM}
	}
	return block.Bytes, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r' || b[len(b)-1] == '\n') {
		b = b[:len(b)-1]
	}
	return b
}
