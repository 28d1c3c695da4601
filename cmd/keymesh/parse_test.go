package main

import (
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
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

// TestWaitDisplay: on a terminal one line is redrawn in place and closed
// before anything else is printed; otherwise every update is a line.
func TestWaitDisplay(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	for _, tc := range []struct {
		tty  bool
		want string
	}{
		{true, "\rwaiting for approval of reg-1: 0s elapsed \rwaiting for approval of reg-1: 1m5s elapsed \n" +
			"cannot reach x; trying again\n\rwaiting for approval of reg-1: 1m5s elapsed \n"},
		{false, "waiting for approval of reg-1: 0s elapsed\nwaiting for approval of reg-1: 1m5s elapsed\n" +
			"cannot reach x; trying again\nwaiting for approval of reg-1: 1m5s elapsed\n"},
	} {
		var b strings.Builder
		now = start
		d := &waitDisplay{w: &b, tty: tc.tty, id: "reg-1", since: start, now: func() time.Time { return now }}
		d.show()
		now = start.Add(65*time.Second + 300*time.Millisecond)
		d.show()
		d.note("cannot reach x; trying again")
		d.note("cannot reach x; trying again") // shown once
		d.show()
		d.end()
		d.end()
		if got := b.String(); got != tc.want {
			t.Errorf("tty=%v: got %q, want %q", tc.tty, got, tc.want)
		}
	}
	var b strings.Builder
	d := &waitDisplay{w: &b, tty: true, quiet: true, id: "reg-1", since: start, now: func() time.Time { return now }}
	d.show()
	d.note("x")
	d.end()
	if b.Len() != 0 {
		t.Errorf("quiet display printed %q", b.String())
	}
}

func TestCheckServer(t *testing.T) {
	for _, s := range []string{"127.0.0.1:8400", "[::1]:8400", "root.example.net:8400", "https://root.example.net:8400"} {
		if err := checkServer(s); err != nil {
			t.Errorf("checkServer(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "nowhere", ":8400", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:x"} {
		if err := checkServer(s); err == nil {
			t.Errorf("checkServer(%q) = nil, want an error", s)
		}
	}
}

// TestDashArgs: ids that begin with '-' (base64url kids and jtis may) are
// arguments, not flags, wherever they stand; flags and their values keep
// working around them.
func TestDashArgs(t *testing.T) {
	a := &app{}
	root := a.rootCmd()
	kid := "-Ab3dEfGh0123456789abcdefghijklmnopqrstuvwx"
	tests := []struct{ in, want []string }{
		{[]string{"revoke", "key", kid, "--reason", "stolen"}, []string{"revoke", "key", "--reason", "stolen", "--", kid}},
		{[]string{"-o", "json", "revoke", "token", kid}, []string{"-o", "json", "revoke", "token", "--", kid}},
		{[]string{"revoke", "--reason=x", "key", kid, "-ojson"}, []string{"revoke", "--reason=x", "key", "-ojson", "--", kid}},
		{[]string{"revoke", "key", "--", kid}, []string{"revoke", "key", "--", kid}},
		// Without a dash-leading id nothing changes, usage errors included.
		{[]string{"revoke", "key", "abc", "--reason", "x"}, []string{"revoke", "key", "abc", "--reason", "x"}},
		{[]string{"revoke", "key", "-z"}, []string{"revoke", "key", "-z"}},
		{[]string{"revoke", "key", "-h"}, []string{"revoke", "key", "-h"}},
	}
	for _, tc := range tests {
		if got := dashArgs(root, tc.in); strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("dashArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseASN(t *testing.T) {
	for in, want := range map[string]uint32{"64500": 64500, "AS64500": 64500, "as4200000000": 4200000000, "1": 1, "65536": 65536, "4294967294": 4294967294} {
		if got, err := parseASN("--asn", in); err != nil || got != want {
			t.Errorf("parseASN(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "AS", "sixty", "64500x", "-1", "+64500", "1.10", "0", "AS0", "23456", "65535", "4294967295", "4294967296", "99999999999"} {
		got, err := parseASN("--asn", in)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseASN(%q) = %d, %v; want a usage error", in, got, err)
		}
	}
}

func TestParseOnOff(t *testing.T) {
	for in, want := range map[string]bool{"on": true, "ON": true, "true": true, "True": true, "off": false, "Off": false, "false": false, "FALSE": false} {
		if got, err := parseOnOff("exclusive membership", in); err != nil || got != want {
			t.Errorf("parseOnOff(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yes", "no", "1", "0", "onn", " on", "enable"} {
		got, err := parseOnOff("exclusive membership", in)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseOnOff(%q) = %v, %v; want a usage error", in, got, err)
		}
	}
}

func TestServeFlagsRaftTimeouts(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		heartbeat time.Duration
		noCrash   bool
	}{
		{nil, 0, false},
		{[]string{"--raft-heartbeat=300ms"}, 300 * time.Millisecond, false},
		{[]string{"--raft-wait-out-crashes"}, 0, true},
	} {
		var f serveFlags
		cmd := &cobra.Command{Use: "server"}
		f.register(cmd, "info")
		if err := cmd.ParseFlags(tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		o, err := f.options(io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if o.Raft.Heartbeat != tc.heartbeat || o.Raft.NoCrashElection != tc.noCrash {
			t.Errorf("%v: heartbeat %s, NoCrashElection %v; want %s, %v", tc.args, o.Raft.Heartbeat, o.Raft.NoCrashElection, tc.heartbeat, tc.noCrash)
		}
	}
	var f serveFlags
	cmd := &cobra.Command{Use: "server"}
	f.register(cmd, "info")
	if err := cmd.ParseFlags([]string{"--raft-heartbeat=-1s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.options(io.Discard); err == nil {
		t.Error("a negative --raft-heartbeat was taken")
	}
}
