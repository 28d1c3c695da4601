package gossip

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/wire.golden")

func goldenProof() Proof {
	return Proof{Node: "edge-1", Network: testNetwork, Addr: "192.0.2.10:7946", Time: 1893456000, KID: "kid-edge-1", Sig: bytes.Repeat([]byte{0xa1}, 8), Peer: "192.0.2.10:1790"}
}

func goldenBulletin() Bulletin {
	return Bulletin{Network: testNetwork, From: 41, To: 42, Time: 1893456000, Issuer: []byte{0x30, 0x03, 0x02, 0x01, 0x01},
		Revocations: []Revocation{{Kind: "node", ID: "edge-9", Time: 1893455990}, {Kind: "key", ID: "kid-x", Time: 1893455995}},
		Sig:         bytes.Repeat([]byte{0xb2}, 8)}
}

// TestGoldenWire: the encodings of a proof and a bulletin and the hashes
// their signatures cover stay byte for byte (go test -rewrite records
// them); what decodes encodes back the same.
func TestGoldenWire(t *testing.T) {
	p, b := goldenProof(), goldenBulletin()
	pe, _ := p.Encode()
	ph, _ := p.SigHash()
	be, _ := b.Encode()
	bh, _ := b.SigHash()
	got := fmt.Sprintf("proof %x\nproof-sighash %x\nbulletin %x\nbulletin-sighash %x\n", pe, ph, be, bh)
	if *rewrite {
		if err := os.WriteFile("testdata/wire.golden", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/wire.golden")
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("the wire changed:\n%s\nwant:\n%s", got, want)
	}
	if q, err := DecodeProof(pe); err != nil || q.Node != p.Node {
		t.Fatalf("%+v %v", q, err)
	}
	if c, err := DecodeBulletin(be); err != nil || c.To != 42 {
		t.Fatalf("%+v %v", c, err)
	}
	bare := p
	bare.Sig = nil
	if h, _ := bare.SigHash(); h != ph {
		t.Fatal("the proof's SigHash covers its signature")
	}
}

// TestBadWire: bad proofs and bulletins are refused with ErrMalformed.
func TestBadWire(t *testing.T) {
	enc := func(v any) []byte { b, _ := encMode.Marshal(v); return b }
	pe, _ := func() ([]byte, error) { p := goldenProof(); return p.Encode() }()
	be, _ := func() ([]byte, error) { b := goldenBulletin(); return b.Encode() }()
	proof := func(edit func(*Proof)) []byte { p := goldenProof(); edit(&p); b, _ := p.Encode(); return b }
	bulletin := func(edit func(*Bulletin)) []byte { b := goldenBulletin(); edit(&b); e, _ := b.Encode(); return e }
	for name, in := range map[string][]byte{
		"empty":                   nil,
		"truncated":               pe[:len(pe)-2],
		"trailing":                append(append([]byte{}, pe...), 0),
		"unknown key":             enc(map[int]any{1: "a", 99: 1}),
		"oversized":               bytes.Repeat([]byte{0x61}, MaxProofSize+1),
		"bad node id":             proof(func(p *Proof) { p.Node = "Edge_1" }),
		"bad address":             proof(func(p *Proof) { p.Addr = "edge-1:7946" }),
		"non-canonical address":   proof(func(p *Proof) { p.Addr = "[::ffff:192.0.2.1]:7946" }),
		"no time":                 proof(func(p *Proof) { p.Time = 0 }),
		"bad peering address":     proof(func(p *Proof) { p.Peer = "edge-1" }),
		"peering address no host": proof(func(p *Proof) { p.Peer = ":1790" }),
	} {
		if _, err := DecodeProof(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("proof %s: %v, want ErrMalformed", name, err)
		}
	}
	for name, in := range map[string][]byte{
		"empty":            nil,
		"truncated":        be[:len(be)-2],
		"not a map":        enc([]int{1}),
		"no revocations":   bulletin(func(b *Bulletin) { b.Revocations = nil }),
		"a backward range": bulletin(func(b *Bulletin) { b.From, b.To = 9, 3 }),
		"index 0":          bulletin(func(b *Bulletin) { b.From = 0 }),
		"an unknown kind":  bulletin(func(b *Bulletin) { b.Revocations[0].Kind = "everything" }),
		"an empty id":      bulletin(func(b *Bulletin) { b.Revocations[0].ID = "" }),
		"too many revocations": bulletin(func(b *Bulletin) {
			for len(b.Revocations) <= MaxBulletinRevocations {
				b.Revocations = append(b.Revocations, Revocation{Kind: "token", ID: fmt.Sprintf("j%d", len(b.Revocations)), Time: 1})
			}
		}),
		"oversized": bytes.Repeat([]byte{0x61}, MaxBulletinSize+1),
	} {
		if _, err := DecodeBulletin(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("bulletin %s: %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzProof(f *testing.F) {
	p := goldenProof()
	b, _ := p.Encode()
	f.Add(b)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := DecodeProof(in)
		if err != nil {
			return
		}
		again, _ := p.Encode()
		if !bytes.Equal(again, in) {
			t.Fatalf("taken but not canonical: %x", in)
		}
	})
}

func FuzzBulletin(f *testing.F) {
	b := goldenBulletin()
	e, _ := b.Encode()
	f.Add(e)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := DecodeBulletin(in)
		if err != nil {
			return
		}
		again, _ := b.Encode()
		if !bytes.Equal(again, in) {
			t.Fatalf("taken but not canonical: %x", in)
		}
	})
}

// FuzzMessage: whatever arrives as a gossip message, a member neither
// panics nor applies it (no bulletin the fuzzer makes is signed).
func FuzzMessage(f *testing.F) {
	m := newTestMesh(f)
	n := m.node("a")
	g, err := New(Config{Node: "a", Network: testNetwork, Transport: m.net.NewTransport(), Keys: [][]byte{testKey},
		Signer: func() (Signer, error) { return n.signer, nil }, Verifier: n.verifier, View: m.view,
		Applied: func() uint64 { return 0 }, OnBulletin: func(b Bulletin) { f.Fatalf("applied %+v", b) }, VerifyRate: 1e9, BulletinRate: 1e9, BulletinBurst: 1e9})
	if err != nil {
		f.Fatal(err)
	}
	b := goldenBulletin()
	be, _ := b.Encode()
	env, _ := encMode.Marshal(envelope{Relayer: "r", Bulletin: be})
	f.Add(append([]byte{msgBulletin}, env...))
	f.Add([]byte{msgBulletin})
	f.Fuzz(func(t *testing.T, in []byte) { g.receive(in) })
}
