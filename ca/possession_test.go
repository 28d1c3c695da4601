package ca

import (
	"errors"
	"testing"
)

func TestPossession(t *testing.T) {
	for _, kt := range []KeyType{KeyP256, KeyP384, KeyEd25519} {
		t.Run(string(kt), func(t *testing.T) {
			k, err := GenerateKey(kt, nil)
			if err != nil {
				t.Fatal(err)
			}
			other, _ := GenerateKey(kt, nil)
			sig, err := SignPossession(k, nil, "collect", "reg-1", "2026-01-01T00:00:00Z")
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyPossession(k.Public(), sig, "collect", "reg-1", "2026-01-01T00:00:00Z"); err != nil {
				t.Fatalf("valid proof refused: %v", err)
			}
			refused := []struct {
				name string
				err  error
			}{
				{"other key", VerifyPossession(other.Public(), sig, "collect", "reg-1", "2026-01-01T00:00:00Z")},
				{"other context", VerifyPossession(k.Public(), sig, "renew", "reg-1", "2026-01-01T00:00:00Z")},
				{"other id", VerifyPossession(k.Public(), sig, "collect", "reg-2", "2026-01-01T00:00:00Z")},
				{"parts shifted", VerifyPossession(k.Public(), sig, "collect", "reg-12026-01-01T00:00:00Z")},
				{"garbage signature", VerifyPossession(k.Public(), []byte("nope"), "collect", "reg-1", "2026-01-01T00:00:00Z")},
			}
			for _, r := range refused {
				if !errors.Is(r.err, ErrPossession) {
					t.Errorf("%s: got %v, want ErrPossession", r.name, r.err)
				}
			}
		})
	}
}
