package identity

import (
	stdjson "encoding/json"
	"fmt"
	"time"

	"github.com/go-json-experiment/json"
)

// Claims are the claims of a keymesh token (DESIGN.md, Trust model):
//
//	iss, sub   the minting node's SPIFFE ID (equal)
//	aud        one audience (a JSON string) or several (a JSON array)
//	exp, nbf, iat  NumericDate, whole seconds
//	jti        128 random bits, base64url
//	principal  ADMIN, NODE, NODE_CUSTODIAN, DATA_CUSTODIAN or USER
//	cnf        {"x5t#S256": ...} when bound to a TLS certificate (RFC 8705)
type Claims struct {
	Issuer    string
	Subject   string
	Audience  []string
	Expiry    time.Time
	NotBefore time.Time
	IssuedAt  time.Time
	ID        string
	Principal Principal
	// CertThumbprint is cnf.x5t#S256: the base64url SHA-256 of the DER of the
	// certificate the token is bound to; "" for an unbound token.
	CertThumbprint string
}

type cnfWire struct {
	X5tS256 string `json:"x5t#S256"`
}

// claimsOut is the wire form for encoding; field order is the wire order.
type claimsOut struct {
	Iss       string            `json:"iss"`
	Sub       string            `json:"sub"`
	Aud       stdjson.Marshaler `json:"aud"`
	Exp       int64             `json:"exp"`
	Nbf       int64             `json:"nbf"`
	Iat       int64             `json:"iat"`
	Jti       string            `json:"jti"`
	Principal string            `json:"principal"`
	Cnf       *cnfWire          `json:"cnf,omitempty"`
}

type audOut []string

func (a audOut) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return stdjson.Marshal(a[0])
	}
	return stdjson.Marshal([]string(a))
}

// MarshalJSON encodes the claims in their token form: aud is a string when
// there is one audience, times are whole seconds since the epoch.
func (c Claims) MarshalJSON() ([]byte, error) {
	out := claimsOut{
		Iss: c.Issuer, Sub: c.Subject, Aud: audOut(c.Audience),
		Exp: c.Expiry.Unix(), Nbf: c.NotBefore.Unix(), Iat: c.IssuedAt.Unix(),
		Jti: c.ID, Principal: string(c.Principal),
	}
	if c.CertThumbprint != "" {
		out.Cnf = &cnfWire{X5tS256: c.CertThumbprint}
	}
	return stdjson.Marshal(out)
}

// UnmarshalJSON reads claims in their token form (what MarshalJSON writes),
// with the same strict shape checks as token parsing. API answers that
// carry claims decode with it.
func (c *Claims) UnmarshalJSON(b []byte) error {
	parsed, err := parseClaims(b)
	if err != nil {
		return err
	}
	*c = parsed
	return nil
}

// claimsIn is the wire form for strict decoding (go-json-experiment: no
// duplicate names, valid UTF-8, case-sensitive names). Unknown claims are
// ignored.
type claimsIn struct {
	Iss       *string  `json:"iss"`
	Sub       *string  `json:"sub"`
	Aud       audIn    `json:"aud"`
	Exp       *int64   `json:"exp"`
	Nbf       *int64   `json:"nbf"`
	Iat       *int64   `json:"iat"`
	Jti       *string  `json:"jti"`
	Principal *string  `json:"principal"`
	Cnf       *cnfWire `json:"cnf"`
}

// audIn accepts a string or an array of strings.
type audIn struct {
	set  bool
	vals []string
}

func (a *audIn) UnmarshalJSON(b []byte) error {
	a.set = true
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		a.vals = []string{s}
		return nil
	}
	return json.Unmarshal(b, &a.vals)
}

const (
	maxAudiences = 32
	maxJTILen    = 128
	// maxNumericDate bounds exp/nbf/iat (the year 10000) so time arithmetic cannot overflow.
	maxNumericDate = 253402300799
)

// parseClaims strictly decodes and checks the shape of the claims JSON.
// Errors wrap ErrClaims.
func parseClaims(data []byte) (Claims, error) {
	var w claimsIn
	if err := json.Unmarshal(data, &w); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrClaims, err)
	}
	missing := func(name string) (Claims, error) {
		return Claims{}, fmt.Errorf("%w: missing or empty %s", ErrClaims, name)
	}
	switch {
	case w.Iss == nil || *w.Iss == "":
		return missing("iss")
	case w.Sub == nil || *w.Sub == "":
		return missing("sub")
	case !w.Aud.set || len(w.Aud.vals) == 0:
		return missing("aud")
	case w.Exp == nil:
		return missing("exp")
	case w.Nbf == nil:
		return missing("nbf")
	case w.Iat == nil:
		return missing("iat")
	case w.Jti == nil || *w.Jti == "":
		return missing("jti")
	case w.Principal == nil || *w.Principal == "":
		return missing("principal")
	}
	if len(w.Aud.vals) > maxAudiences {
		return Claims{}, fmt.Errorf("%w: %d audiences, limit %d", ErrClaims, len(w.Aud.vals), maxAudiences)
	}
	for _, a := range w.Aud.vals {
		if a == "" {
			return missing("aud entry")
		}
	}
	if len(*w.Jti) > maxJTILen {
		return Claims{}, fmt.Errorf("%w: jti longer than %d", ErrClaims, maxJTILen)
	}
	for _, d := range [...]struct {
		name string
		v    int64
	}{{"exp", *w.Exp}, {"nbf", *w.Nbf}, {"iat", *w.Iat}} {
		if d.v < 0 || d.v > maxNumericDate {
			return Claims{}, fmt.Errorf("%w: %s out of range", ErrClaims, d.name)
		}
	}
	c := Claims{
		Issuer: *w.Iss, Subject: *w.Sub, Audience: w.Aud.vals,
		Expiry: time.Unix(*w.Exp, 0), NotBefore: time.Unix(*w.Nbf, 0), IssuedAt: time.Unix(*w.Iat, 0),
		ID: *w.Jti, Principal: Principal(*w.Principal),
	}
	if w.Cnf != nil {
		if w.Cnf.X5tS256 == "" {
			return missing("cnf.x5t#S256")
		}
		if d, err := b64.DecodeString(w.Cnf.X5tS256); err != nil || len(d) != 32 || !strictB64(w.Cnf.X5tS256) {
			return Claims{}, fmt.Errorf("%w: cnf.x5t#S256 is not a base64url SHA-256", ErrClaims)
		}
		c.CertThumbprint = w.Cnf.X5tS256
	}
	return c, nil
}
