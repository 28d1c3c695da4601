package main

import (
	"os/exec"
	"testing"
)

func TestCanonicalSerial(t *testing.T) {
	good := []struct{ in, want string }{
		{"01ab", "1ab"},
		{"01:AB:cd", "1abcd"},
		{"0x00FF", "ff"},
		{"0", "0"},
		{"1ab23cd45ef", "1ab23cd45ef"},
	}
	for _, tc := range good {
		got, err := canonicalSerial(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("canonicalSerial(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "zz", "0x", ":", "-1", "01 ab", "1g", string(make([]byte, 65))} {
		if got, err := canonicalSerial(in); err == nil {
			t.Errorf("canonicalSerial(%q) = %q, want an error", in, got)
		}
	}
}

func FuzzCanonicalSerial(f *testing.F) {
	for _, s := range []string{"01ab", "01:AB:cd", "0x00", "", "zz", "-1", "+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := canonicalSerial(in)
		if err != nil {
			return
		}
		again, err := canonicalSerial(got)
		if err != nil || again != got {
			t.Fatalf("canonicalSerial(%q) = %q is not canonical: %q, %v", in, got, again, err)
		}
	})
}

func TestNextName(t *testing.T) {
	for in, want := range map[string]string{"r1": "r2", "root-09": "root-10", "alpha": "<NAME>", "7": "8"} {
		if got := nextName(in); got != want {
			t.Errorf("nextName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for _, in := range []string{"plain", "/tmp/a b/c", "it's", "", "$HOME", "a\"b", "`x`"} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(in)).Output()
		if err != nil || string(out) != in {
			t.Errorf("sh read %q back as %q (%v)", in, out, err)
		}
	}
}
