package rtr

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// -rewrite writes the traces of testdata/machine/*.txt anew from what the
// machine does now. Read the diff before committing it.
var rewrite = flag.Bool("rewrite", false, "rewrite the golden traces of testdata/machine")

const scriptNetwork = "test.example.net"

// TestMachineScripts runs the scripts of testdata/machine: commands to a
// cache and one router session above the line "----"; below it, the
// trace of what the cache sent, which must stay as it is.
//
// Commands (one a line, # starts a comment):
//
//	config history=N                   a new cache (default history) and session
//	load SERIAL [PREFIX-MAX-ASN]...     a full load
//	update SERIAL PREFIX=[MAX-ASN,...]  prefixes set to the VRPs given (none: removed)
//	reset V | serial V SESSION SERIAL   a router query in version V; SESSION "cur" is the current id
//	raw HEX                             bytes from the router, as the Reader would pass them
//	notify                              the cache changed (what a Serial Notify would follow)
func TestMachineScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/machine/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts in testdata/machine: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			script, want, _ := strings.Cut(string(b), "----\n")
			got, err := runScript(script)
			if err != nil {
				t.Fatal(err)
			}
			if *rewrite {
				if err := os.WriteFile(file, []byte(script+"----\n"+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("trace of %s differs (go test ./routing/rtr -run TestMachineScripts -rewrite writes it anew)\n--- want\n%s--- got\n%s", file, want, got)
			}
		})
	}
}

func parseVRP(s string) (VRP, error) {
	// PREFIX-MAX-ASN, e.g. 10.0.0.0/8-24-64500
	i := strings.LastIndexByte(s, '-')
	j := strings.LastIndexByte(s[:max(i, 0)], '-')
	if i < 0 || j < 0 {
		return VRP{}, fmt.Errorf("VRP %q is not PREFIX-MAX-ASN", s)
	}
	p, err := netip.ParsePrefix(s[:j])
	if err != nil {
		return VRP{}, err
	}
	ml, err := strconv.ParseUint(s[j+1:i], 10, 8)
	if err != nil {
		return VRP{}, err
	}
	asn, err := strconv.ParseUint(s[i+1:], 10, 32)
	if err != nil {
		return VRP{}, err
	}
	return VRP{Prefix: p, MaxLen: uint8(ml), ASN: uint32(asn)}, nil
}

func runScript(script string) (string, error) {
	var (
		c   = NewCache(scriptNetwork, 0)
		m   = newMachine(c, DefaultTimers)
		out strings.Builder
	)
	trace := func(b []byte, closed bool) error {
		r := NewReader(bytes.NewReader(b), 1<<30)
		for {
			p, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("the machine sent a PDU it cannot read back: %v", err)
			}
			s := p.String()
			if p.Type == TypeCacheResponse || p.Type == TypeEndOfData || p.Type == TypeSerialNotify {
				if p.Session == SessionID(scriptNetwork, c.serial) {
					s = strings.Replace(s, fmt.Sprintf("session=%d", p.Session), "session=cur", 1)
				}
			}
			fmt.Fprintf(&out, "  < %s\n", s)
		}
		if closed {
			out.WriteString("  close\n")
		}
		return nil
	}
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		bad := func(format string, args ...any) error {
			return fmt.Errorf("line %d %q: %s", n+1, line, fmt.Sprintf(format, args...))
		}
		out.WriteString(line + "\n")
		num := func(i int) (uint64, error) {
			if len(f) <= i {
				return 0, bad("argument %d missing", i)
			}
			return strconv.ParseUint(f[i], 10, 64)
		}
		switch f[0] {
		case "config":
			h := 0
			for _, a := range f[1:] {
				if v, ok := strings.CutPrefix(a, "history="); ok {
					x, err := strconv.Atoi(v)
					if err != nil {
						return "", bad("%v", err)
					}
					h = x
				}
			}
			c = NewCache(scriptNetwork, h)
			m = newMachine(c, DefaultTimers)
		case "load":
			serial, err := num(1)
			if err != nil {
				return "", bad("%v", err)
			}
			var vs []VRP
			for _, a := range f[2:] {
				v, err := parseVRP(a)
				if err != nil {
					return "", bad("%v", err)
				}
				vs = append(vs, v)
			}
			c.Load(serial, vs)
		case "update":
			serial, err := num(1)
			if err != nil {
				return "", bad("%v", err)
			}
			ch := map[netip.Prefix][]VRP{}
			for _, a := range f[2:] {
				ps, list, _ := strings.Cut(a, "=")
				p, err := netip.ParsePrefix(ps)
				if err != nil {
					return "", bad("%v", err)
				}
				ch[p] = nil
				for _, x := range strings.Split(list, ",") {
					if x == "" {
						continue
					}
					v, err := parseVRP(ps + "-" + x)
					if err != nil {
						return "", bad("%v", err)
					}
					ch[p] = append(ch[p], v)
				}
			}
			c.Update(serial, ch)
		case "reset", "serial":
			v, err := num(1)
			if err != nil {
				return "", bad("%v", err)
			}
			p := PDU{Version: uint8(v), Type: TypeResetQuery}
			if f[0] == "serial" {
				p.Type = TypeSerialQuery
				if len(f) < 4 {
					return "", bad("serial V SESSION SERIAL")
				}
				if f[2] == "cur" {
					p.Session = SessionID(scriptNetwork, c.serial)
				} else {
					s, err := strconv.ParseUint(f[2], 10, 16)
					if err != nil {
						return "", bad("%v", err)
					}
					p.Session = uint16(s)
				}
				s, err := num(3)
				if err != nil {
					return "", bad("%v", err)
				}
				p.Serial = uint32(s)
			}
			res := m.receive(p.Append(nil), nil)
			if err := trace(res.bytes(), res.close); err != nil {
				return "", bad("%v", err)
			}
		case "raw":
			b, err := hex.DecodeString(strings.Join(f[1:], ""))
			if err != nil {
				return "", bad("%v", err)
			}
			// as the server does: the Reader's refusal, or the bytes
			r := NewReader(bytes.NewReader(b), DefaultMaxPDU)
			raw, rerr := r.ReadRaw()
			res := m.receive(raw, rerr)
			if err := trace(res.bytes(), res.close); err != nil {
				return "", bad("%v", err)
			}
		case "notify":
			if err := trace(m.changed(nil), false); err != nil {
				return "", bad("%v", err)
			}
		default:
			return "", bad("unknown command")
		}
	}
	return out.String(), nil
}
