package cluster

import (
	"crypto/x509"
	"encoding/json"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
)

// nodeJWK is the JWKS entry of a certificate's key.
func nodeJWK(chain []*x509.Certificate) (*fsm.JWK, error) {
	j, err := identity.NewJWK(chain[0].PublicKey, chain)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	id, err := ca.IdentityOf(chain[0])
	if err != nil {
		return nil, err
	}
	return &fsm.JWK{KID: j.Kid, Key: raw, Node: id.Name, State: fsm.JWKActive, NotAfter: chain[0].NotAfter}, nil
}
