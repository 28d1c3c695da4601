package ca

import (
	"crypto/x509"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestCreateCRL(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	n1, _ := p.node(t, "n1", testNow)
	n2, _ := p.node(t, "n2", testNow)
	n3, _ := p.node(t, "n3", testNow)
	revokedAt := testNow.Add(-time.Hour)
	entries := []x509.RevocationListEntry{
		{SerialNumber: n1.SerialNumber, RevocationTime: revokedAt, ReasonCode: 1},
		{SerialNumber: n2.SerialNumber},
	}
	next := testNow.Add(time.Hour)
	der, err := CreateCRL(p.issuer, entries, big.NewInt(7), testNow, next, nil)
	if err != nil {
		t.Fatal(err)
	}
	if entries[1].RevocationTime != (time.Time{}) {
		t.Errorf("CreateCRL changed the caller's entries")
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(p.issuer.Cert); err != nil {
		t.Errorf("not signed by the issuer: %v", err)
	}
	if err := crl.CheckSignatureFrom(p.root.Cert); err == nil {
		t.Errorf("signature checks against the root")
	}
	if !crl.NextUpdate.Equal(next.Truncate(time.Second)) {
		t.Errorf("nextUpdate %s, want %s", crl.NextUpdate, next)
	}
	if back := testNow.Sub(crl.ThisUpdate); back < 0 || back > Backdate {
		t.Errorf("thisUpdate %s", crl.ThisUpdate)
	}
	if crl.Number.Int64() != 7 {
		t.Errorf("number %v", crl.Number)
	}
	if string(crl.RawIssuer) != string(p.issuer.Cert.RawSubject) || string(crl.AuthorityKeyId) != string(p.issuer.Cert.SubjectKeyId) {
		t.Errorf("issuer or AKI does not name the issuer")
	}
	if len(crl.RevokedCertificateEntries) != 2 || !crl.RevokedCertificateEntries[0].RevocationTime.Equal(revokedAt.Truncate(time.Second)) ||
		crl.RevokedCertificateEntries[0].ReasonCode != 1 || !crl.RevokedCertificateEntries[1].RevocationTime.Equal(testNow.Truncate(time.Second)) {
		t.Errorf("entries %+v", crl.RevokedCertificateEntries)
	}
	if crl.SignatureAlgorithm != x509.ECDSAWithSHA384 {
		t.Errorf("signed with %s", crl.SignatureAlgorithm)
	}

	got, err := CheckCRL(der, p.issuer.Cert, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !Revoked(got, n1.SerialNumber) || !Revoked(got, n2.SerialNumber) || Revoked(got, n3.SerialNumber) || Revoked(nil, n1.SerialNumber) {
		t.Errorf("Revoked answers wrongly")
	}
	// An empty CRL is fine; the root lists revoked intermediates.
	if _, err := CreateCRL(p.root, nil, big.NewInt(0), testNow, next, nil); err != nil {
		t.Errorf("empty root CRL: %v", err)
	}

	other := newPKI(t, testNetwork, testNow)
	leaf, leafKey := p.node(t, "leaf", testNow)
	refusals := []struct {
		name   string
		issuer Signer
		e      []x509.RevocationListEntry
		number *big.Int
		now    time.Time
		next   time.Time
		is     error
	}{
		{"next before now", p.issuer, nil, big.NewInt(1), testNow, testNow.Add(-time.Second), ErrCRL},
		{"next equals now", p.issuer, nil, big.NewInt(1), testNow, testNow, ErrCRL},
		{"no number", p.issuer, nil, nil, testNow, next, ErrCRL},
		{"negative number", p.issuer, nil, big.NewInt(-1), testNow, next, ErrCRL},
		{"huge number", p.issuer, nil, new(big.Int).Lsh(big.NewInt(1), 160), testNow, next, ErrCRL},
		{"entry without serial", p.issuer, []x509.RevocationListEntry{{}}, big.NewInt(1), testNow, next, ErrCRL},
		{"leaf as issuer", Signer{Cert: leaf, Key: leafKey}, nil, big.NewInt(1), testNow, next, ErrIssuer},
		{"key mismatch", Signer{Cert: p.issuer.Cert, Key: other.issuer.Key}, nil, big.NewInt(1), testNow, next, ErrIssuer},
		{"zero now", p.issuer, nil, big.NewInt(1), time.Time{}, next, ErrNoTime},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			if der, err := CreateCRL(tc.issuer, tc.e, tc.number, tc.now, tc.next, nil); der != nil || !errors.Is(err, tc.is) {
				t.Fatalf("CreateCRL = %d bytes, %v; want %v", len(der), err, tc.is)
			}
		})
	}

	checks := []struct {
		name   string
		der    []byte
		issuer *x509.Certificate
		now    time.Time
		msg    string
	}{
		{"other issuer", der, other.issuer.Cert, testNow, "not signed by"},
		{"root instead of issuer", der, p.root.Cert, testNow, "not signed by"},
		{"out of date", der, p.issuer.Cert, next, "out of date"},
		{"from the future", der, p.issuer.Cert, testNow.Add(-2 * Backdate), "check the clock"},
		{"garbage", []byte("crl"), p.issuer.Cert, testNow, "invalid revocation list"},
		{"truncated", der[:len(der)-3], p.issuer.Cert, testNow, "invalid revocation list"},
		{"no issuer", der, nil, testNow, "no issuer"},
	}
	for _, tc := range checks {
		t.Run("check "+tc.name, func(t *testing.T) {
			crl, err := CheckCRL(tc.der, tc.issuer, tc.now)
			if crl != nil || !errors.Is(err, ErrCRL) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("CheckCRL = %v, %v; want ErrCRL mentioning %q", crl, err, tc.msg)
			}
		})
	}
	if _, err := CheckCRL(make([]byte, MaxCRLSize+1), p.issuer.Cert, testNow); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized CRL: %v", err)
	}
}
