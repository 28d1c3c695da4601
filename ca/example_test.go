package ca_test

import (
	"crypto/x509"
	"fmt"
	"math/big"
	"time"

	"github.com/keymesh/keymesh/ca"
)

// Example walks the call order of doc.go: bootstrap a network, let a second
// root server join, register a node, revoke it.
func Example() {
	now := time.Date(2031, 1, 1, 12, 0, 0, 0, time.UTC)
	const network = "mainnet.example.net"

	// Bootstrap on r1: the AS root, sealed under the seal key.
	root, _ := ca.NewRoot(network, now, nil)
	sealKey, _ := ca.NewSealKey(nil)
	sealedRoot, _ := ca.SealSigner(sealKey, root.Key, network, nil)
	r1Key, _ := ca.GenerateKey(ca.KeyP384, nil)
	r1Cert, _ := ca.SignIntermediate(root, r1Key.Public(), network, "r1", now, nil)
	r1 := ca.Signer{Cert: r1Cert, Key: r1Key}
	pin := ca.Hash(root.Cert) // printed for operators

	// r2 joins: after the pinned first contact, a server that unseals the
	// root signs r2's issuing certificate.
	if err := ca.MatchHash(root.Cert, pin); err != nil {
		fmt.Println(err)
		return
	}
	unsealed, _ := ca.OpenSigner(sealKey, sealedRoot, network)
	r2Key, _ := ca.GenerateKey(ca.KeyP384, nil)
	r2Cert, _ := ca.SignIntermediate(ca.Signer{Cert: root.Cert, Key: unsealed}, r2Key.Public(), network, "r2", now, nil)

	// A node registers: its key stays on the node; the CSR is checked
	// before the registration is proposed; the certificate is signed from
	// the approved registration.
	nodeKey, _ := ca.GenerateKey(ca.KeyP256, nil)
	csrDER, _ := ca.NewCSR(nodeKey, ca.Identity{Network: network, Kind: ca.KindNode, Name: "edge-1"}, nil, nil)
	csr, err := ca.CheckCSR(csrDER)
	if err != nil {
		fmt.Println(err)
		return
	}
	node, _ := ca.SignNode(r1, ca.NodeRequest{PublicKey: csr.PublicKey, Network: network, NodeID: "edge-1", Now: now}, nil)

	roots := []*x509.Certificate{root.Cert}
	id, err := ca.VerifyIdentity(node, []*x509.Certificate{r1Cert, r2Cert}, roots, x509.ExtKeyUsageClientAuth, now)
	fmt.Println(id, err)

	// Revocation: r1's CRL lists the node's serial.
	crlDER, _ := ca.CreateCRL(r1, []x509.RevocationListEntry{{SerialNumber: node.SerialNumber}}, big.NewInt(1), now, now.Add(time.Hour), nil)
	crl, err := ca.CheckCRL(crlDER, r1Cert, now)
	fmt.Println(ca.Revoked(crl, node.SerialNumber), err)
	// Output:
	// spiffe://mainnet.example.net/node/edge-1 <nil>
	// true <nil>
}
