package session

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// -rewrite writes the traces of testdata/fsm/*.txt anew from what the
// machine does now. Read the diff before committing it.
var rewrite = flag.Bool("rewrite", false, "rewrite the golden traces of testdata/fsm")

// TestMachineScripts runs the scripts of testdata/fsm: events for one
// Machine on a fake clock, above the line "----"; below it, the trace of
// what the machine did, which must stay as it is.
//
// Commands (one a line, # starts a comment):
//
//	config local=ID peer=ID [dial] [hold=D] [open-timeout=D] [retry=MIN-MAX] [seed=N]
//	start | stop | reset | revoked | holddown D
//	dialed N [err]       inbound N
//	open N hold=D [refuse=CODE/SUB]
//	keepalive N | update N BYTES | refresh N | notification N CODE/SUB | badframe N | closed N
//	+D                   let D pass (timers fire when they are due)
func TestMachineScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/fsm/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts in testdata/fsm: %v", err)
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
				t.Errorf("trace of %s differs (go test ./session -run TestMachineScripts -rewrite writes it anew)\n--- want\n%s--- got\n%s", file, want, got)
			}
		})
	}
}

func runScript(script string) (string, error) {
	var (
		m     *Machine
		out   strings.Builder
		start = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		now   = start
		ids   uint64
	)
	emit := func(acts []Action) {
		for _, a := range acts {
			fmt.Fprintf(&out, "  [%s] %s\n", now.Sub(start), a)
		}
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
		if f[0] == "config" {
			cfg, err := parseConfig(f[1:])
			if err != nil {
				return "", bad("%v", err)
			}
			m = NewMachine(cfg, func() uint64 { ids++; return ids })
			continue
		}
		if m == nil {
			return "", bad("config first")
		}
		fmt.Fprintf(&out, "> %s\n", line)
		conn := func() uint64 {
			if len(f) < 2 {
				return 0
			}
			c, _ := strconv.ParseUint(f[1], 10, 64)
			return c
		}
		var ev Event
		switch f[0] {
		case "start":
			ev = EvStart{}
		case "stop":
			ev = EvStop{Notification: notification(CodeCease, SubCeaseShutdown, "operator")}
		case "reset":
			ev = EvReset{Notification: notification(CodeCease, SubCeaseReset, "operator")}
		case "revoked":
			ev = EvRevoked{Notification: notification(CodeCease, SubCeaseRevoked, "node revoked")}
		case "holddown":
			if len(f) != 2 {
				return "", bad("holddown DURATION")
			}
			d, err := time.ParseDuration(f[1])
			if err != nil {
				return "", bad("%v", err)
			}
			ev = EvHoldDown{Notification: notification(CodeCease, SubCeaseMaxPrefixes, "maximum number of prefixes reached"), For: d}
		case "dialed":
			var err error
			if len(f) > 2 {
				err = errors.New(strings.Join(f[2:], " "))
			}
			ev = EvDialed{Conn: conn(), Err: err}
		case "inbound":
			ev = EvInbound{Conn: conn()}
		case "open":
			e := EvOpen{Conn: conn()}
			for _, kv := range f[2:] {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "hold":
					d, err := time.ParseDuration(v)
					if err != nil {
						return "", bad("%v", err)
					}
					e.HoldTime = d
				case "refuse":
					code, sub, err := codeSub(v)
					if err != nil {
						return "", bad("%v", err)
					}
					n := notification(code, sub, "refused")
					e.Refuse = &n
				}
			}
			ev = e
		case "keepalive":
			ev = EvKeepalive{Conn: conn()}
		case "update":
			size, _ := strconv.Atoi(f[2])
			ev = EvUpdate{Conn: conn(), Payload: make([]byte, size)}
		case "refresh":
			ev = EvRouteRefresh{Conn: conn()}
		case "notification":
			code, sub, err := codeSub(f[2])
			if err != nil {
				return "", bad("%v", err)
			}
			ev = EvNotification{Conn: conn(), Notification: Notification{Code: code, Subcode: sub}}
		case "badframe":
			ev = EvBadFrame{Conn: conn(), Notification: Notification{Code: CodeHeader, Subcode: SubNotSynchronized}}
		case "closed":
			ev = EvClosed{Conn: conn()}
		default:
			if !strings.HasPrefix(f[0], "+") {
				return "", bad("unknown command")
			}
			d, err := time.ParseDuration(f[0][1:])
			if err != nil {
				return "", bad("%v", err)
			}
			until := now.Add(d)
			for next := m.Next(); !next.IsZero() && !next.After(until); next = m.Next() {
				now = next
				emit(m.Step(now, EvTick{}))
			}
			now = until
			fmt.Fprintf(&out, "  state %s\n", m.State())
			continue
		}
		emit(m.Step(now, ev))
		fmt.Fprintf(&out, "  state %s\n", m.State())
	}
	return out.String(), nil
}

func codeSub(s string) (uint8, uint8, error) {
	a, b, _ := strings.Cut(s, "/")
	code, err := strconv.ParseUint(a, 10, 8)
	if err != nil {
		return 0, 0, err
	}
	sub, _ := strconv.ParseUint(b, 10, 8)
	return uint8(code), uint8(sub), nil
}

func parseConfig(args []string) (MachineConfig, error) {
	cfg := MachineConfig{HoldTime: DefaultHoldTime}
	seed := uint64(1)
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		var err error
		switch k {
		case "local":
			cfg.Local = v
		case "peer":
			cfg.Peer = v
		case "dial":
			cfg.Dial = true
		case "hold":
			cfg.HoldTime, err = time.ParseDuration(v)
		case "open-timeout":
			cfg.OpenTimeout, err = time.ParseDuration(v)
		case "retry":
			lo, hi, _ := strings.Cut(v, "-")
			if cfg.RetryMin, err = time.ParseDuration(lo); err == nil {
				cfg.RetryMax, err = time.ParseDuration(hi)
			}
		case "seed":
			seed, err = strconv.ParseUint(v, 10, 64)
		default:
			err = fmt.Errorf("unknown config %q", k)
		}
		if err != nil {
			return cfg, err
		}
	}
	cfg.Rand = rand.New(rand.NewPCG(seed, seed))
	return cfg, nil
}
