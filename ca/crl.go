package ca

import (
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"time"
)

// MaxCRLSize is the largest DER revocation list CheckCRL accepts.
const MaxCRLSize = 16 << 20

// CreateCRL signs a revocation list (DER) of issuer's certificates: the
// given entries, CRL number number (non-negative, at most 20 bytes),
// thisUpdate Backdate before now, and nextUpdate, which must be after now.
// Entries without a revocation time get now. One CRL per issuer: an issuing
// intermediate lists the certificates it signed, the AS root lists revoked
// intermediates. rnd nil means crypto/rand.
func CreateCRL(issuer Signer, revoked []x509.RevocationListEntry, number *big.Int, now, nextUpdate time.Time, rnd io.Reader) ([]byte, error) {
	if err := issuer.check(now); err != nil {
		return nil, err
	}
	if issuer.Cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("%w: %q lacks cRLSign", ErrIssuer, issuer.Cert.Subject.CommonName)
	}
	if number == nil || number.Sign() < 0 || number.BitLen() > 159 {
		return nil, fmt.Errorf("%w: CRL number must be a non-negative integer of at most 20 bytes", ErrCRL)
	}
	if !nextUpdate.After(now) {
		return nil, fmt.Errorf("%w: nextUpdate %s is not after now %s", ErrCRL, nextUpdate.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	entries := make([]x509.RevocationListEntry, len(revoked))
	for i, e := range revoked {
		if e.SerialNumber == nil {
			return nil, fmt.Errorf("%w: entry %d has no serial number", ErrCRL, i)
		}
		if e.RevocationTime.IsZero() {
			e.RevocationTime = now
		}
		e.RevocationTime = e.RevocationTime.UTC()
		entries[i] = e
	}
	tmpl := &x509.RevocationList{
		RevokedCertificateEntries: entries,
		Number:                    number,
		ThisUpdate:                notBefore(now),
		NextUpdate:                nextUpdate.UTC(),
	}
	der, err := x509.CreateRevocationList(randOrDefault(rnd), tmpl, issuer.Cert, issuer.Key)
	if err != nil {
		return nil, fmt.Errorf("ca: signing revocation list: %w", err)
	}
	return der, nil
}

// CheckCRL parses a DER revocation list and checks that issuer signed it and
// that it is current at now (thisUpdate <= now < nextUpdate).
func CheckCRL(der []byte, issuer *x509.Certificate, now time.Time) (*x509.RevocationList, error) {
	if len(der) > MaxCRLSize {
		return nil, fmt.Errorf("%w: revocation list of %d bytes", ErrTooLarge, len(der))
	}
	if issuer == nil {
		return nil, fmt.Errorf("%w: no issuer to check against", ErrCRL)
	}
	if now.IsZero() {
		return nil, ErrNoTime
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCRL, err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("%w: not signed by %q: %w", ErrCRL, issuer.Subject.CommonName, err)
	}
	if now.Before(crl.ThisUpdate) {
		return nil, fmt.Errorf("%w: issued at %s, after now; check the clock", ErrCRL, crl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if crl.NextUpdate.IsZero() || !now.Before(crl.NextUpdate) {
		return nil, fmt.Errorf("%w: out of date since %s; fetch a fresh one from /v1/ca/crl", ErrCRL, crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	return crl, nil
}

// Revoked reports whether serial is listed in crl.
func Revoked(crl *x509.RevocationList, serial *big.Int) bool {
	if crl == nil || serial == nil {
		return false
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(serial) == 0 {
			return true
		}
	}
	return false
}
