package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/client"
)

// RotateKey gives the node a new key and a certificate for it, over mutual
// TLS with the current certificate. The new key's kid signs from then on;
// the previous kid stays in the JWKS as retiring and keeps verifying the
// tokens it signed before the rotation until its certificate expires. The
// new key and certificate replace the old files only once the cluster has
// committed the rotation.
func RotateKey(ctx context.Context, dir string, keyType ca.KeyType) (*x509.Certificate, error) {
	st, _, roots, err := load(dir)
	if err != nil {
		return nil, err
	}
	cert, err := Certificate(dir)
	if err != nil {
		return nil, err
	}
	if keyType == "" {
		keyType, err = ca.KeyTypeOf(cert.Leaf.PublicKey)
		if err != nil {
			return nil, err
		}
	}
	key, err := ca.GenerateKey(keyType, nil)
	if err != nil {
		return nil, err
	}
	csr, err := ca.NewCSR(key, ca.Identity{Network: st.Network, Kind: ca.KindNode, Name: st.NodeID}, cert.Leaf.DNSNames, nil)
	if err != nil {
		return nil, err
	}
	cl, err := client.New(client.Config{Server: st.Server, CAPEM: ca.EncodeCertsPEM(roots...), Certificate: &cert})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	resp, err := cl.Renew(ctx, csr)
	if err != nil {
		return nil, fmt.Errorf("agent: key rotation refused: %w", err)
	}
	chain, err := checkChain(resp.Chain, key, roots, st)
	if err != nil {
		return nil, err
	}
	// Both files are written aside, then renamed key first. A crash
	// between the two renames leaves node.pem.new, which Certificate
	// finishes on its next call (recoverRotation).
	if err := ca.WriteCertsFile(CertPath(dir)+".new", chain...); err != nil {
		return nil, err
	}
	if err := ca.WriteKeyFile(KeyPath(dir)+".new", key); err != nil {
		return nil, err
	}
	if err := os.Rename(KeyPath(dir)+".new", KeyPath(dir)); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := os.Rename(CertPath(dir)+".new", CertPath(dir)); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return chain[0], nil
}

// recoverRotation finishes a rotation that stopped between renaming the
// new key and the new certificate into place.
func recoverRotation(dir string) {
	next := CertPath(dir) + ".new"
	certs, err := ca.ReadCertsFile(next)
	if err != nil {
		return
	}
	key, err := ca.ReadKeyFile(KeyPath(dir))
	if err != nil {
		return
	}
	if pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(key.Public()) {
		os.Rename(next, CertPath(dir))
	}
}
