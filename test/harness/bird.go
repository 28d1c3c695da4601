package harness

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RequireBIRDEnv, set (as .ci/run sets it), makes a missing BIRD a
// failure instead of a skip: CI must not pass by skipping.
const RequireBIRDEnv = "KEYMESH_REQUIRE_BIRD"

// BIRD is a BIRD 2 daemon the test runs, with RPKI protocols to RTR
// caches, and its control socket.
type BIRD struct {
	t    testing.TB
	dir  string
	sock string
	cmd  *exec.Cmd
	log  bytes.Buffer
	bin  string
	ctl  string
}

// RTRCache is one RTR cache BIRD validates against, into ROA tables of
// its own: <Name>4 and <Name>6.
type RTRCache struct {
	Name string // a BIRD symbol: letters, digits, _
	Addr string // host:port
}

// StartBIRD runs BIRD (Debian's bird2) in the foreground with one RPKI
// protocol per cache. Without a bird binary the test is skipped, or
// failed when RequireBIRDEnv is set.
func StartBIRD(t testing.TB, caches ...RTRCache) *BIRD {
	t.Helper()
	bin, err := exec.LookPath("bird")
	ctl, cerr := exec.LookPath("birdc")
	if err != nil || cerr != nil {
		if os.Getenv(RequireBIRDEnv) != "" {
			t.Fatalf("BIRD is not installed (bird, birdc) and %s is set: install Debian's bird2 (.ci/run does)", RequireBIRDEnv)
		}
		t.Skip("BIRD is not installed (Debian's bird2); .ci/run installs it")
	}
	dir, err := os.MkdirTemp("", "bird")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var conf strings.Builder
	conf.WriteString("router id 192.0.2.1;\nlog stderr all;\n")
	for _, c := range caches {
		host, port, err := net.SplitHostPort(c.Addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "roa4 table %s4;\nroa6 table %s6;\n", c.Name, c.Name)
		fmt.Fprintf(&conf, "protocol rpki %s {\n  roa4 { table %s4; };\n  roa6 { table %s6; };\n  remote %s port %s;\n  retry keep 1;\n}\n",
			c.Name, c.Name, c.Name, host, port)
	}
	file := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(file, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &BIRD{t: t, dir: dir, sock: filepath.Join(dir, "bird.ctl"), bin: bin, ctl: ctl}
	b.cmd = exec.Command(bin, "-f", "-c", file, "-s", b.sock, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.Stdout, b.cmd.Stderr = &b.log, &b.log
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start BIRD: %v", err)
	}
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		b.cmd.Wait()
		if t.Failed() {
			t.Logf("BIRD's log:\n%s", b.log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.Ctl("show", "status"); err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("BIRD's control socket did not answer within 10s:\n%s", b.log.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a real process
	}
}

// Ctl runs birdc with args and returns its output.
func (b *BIRD) Ctl(args ...string) (string, error) {
	out, err := exec.Command(b.ctl, append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

var roaLine = regexp.MustCompile(`^(\S+-\d+) AS(\d+)\s`)

// ROAs lists the ROA table table as "prefix-maxlen ASn", sorted.
func (b *BIRD) ROAs(table string) []string {
	b.t.Helper()
	out, err := b.Ctl("show", "route", "table", table)
	if err != nil {
		b.t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if m := roaLine.FindStringSubmatch(l); m != nil {
			got = append(got, m[1]+" AS"+m[2])
		}
	}
	slices.Sort(got)
	return got
}

// ROA check results, as BIRD's roa_check returns them.
const (
	ROAUnknown = "unknown"
	ROAValid   = "valid"
	ROAInvalid = "invalid"
)

var enumValue = regexp.MustCompile(`\(enum \d+\)(\d)`)

// ROACheck is BIRD's roa_check(table, prefix, asn).
func (b *BIRD) ROACheck(table, prefix string, asn uint32) string {
	b.t.Helper()
	out, err := b.Ctl("eval", fmt.Sprintf("roa_check(%s, %s, %d)", table, prefix, asn))
	if err != nil {
		b.t.Fatal(err)
	}
	m := enumValue.FindStringSubmatch(out)
	if m == nil {
		b.t.Fatalf("roa_check answered %q", out)
	}
	switch m[1] {
	case "0":
		return ROAUnknown
	case "1":
		return ROAValid
	case "2":
		return ROAInvalid
	}
	b.t.Fatalf("roa_check answered %q", out)
	return ""
}

// WaitROAs polls BIRD's table (it offers no event for a change) until
// cond holds for it, and returns when it did.
func (b *BIRD) WaitROAs(table string, timeout time.Duration, what string, cond func([]string) bool) time.Time {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := b.ROAs(table)
		if cond(got) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("BIRD's %s: %v; %s not seen within %s", table, got, what, timeout)
		}
		time.Sleep(2 * time.Millisecond) // polling a real process
	}
}
