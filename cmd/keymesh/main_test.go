package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the test binary act as the keymesh command inside scripts.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"keymesh": func() { os.Exit(mainExit()) }})
}

// TestScripts runs testdata/script/*.txtar. Besides the standard commands,
// scripts may use:
//
//	exits CODE keymesh ARGS...  run keymesh; the exit code must be CODE, and a
//	                            failure must print exactly one "keymesh: " line on stderr
//	waitfile [-t DUR] PATH      wait until PATH exists (default 30s)
//	jsonvar KEY VAR             set $VAR to the string or number KEY of the JSON on stdout
//	loadenv FILE                apply the `export K=V ...` lines of FILE (as keymesh dev writes)
//	freeport VAR                set $VAR to 127.0.0.1:PORT where nothing listens
//	[!] eventually [-t DUR] COMMAND ARGS...
//	                            rerun COMMAND until it exits 0 (with !: until it
//	                            fails), within 30s by default
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			// Scripts name everything they use; nothing leaks in from the
			// environment of the test run.
			for _, k := range []string{envServer, envCAFile, envCredential, envToken} {
				env.Setenv(k, "")
			}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":      cmdExits,
			"waitfile":   cmdWaitfile,
			"jsonvar":    cmdJSONVar,
			"loadenv":    cmdLoadenv,
			"freeport":   cmdFreeport,
			"eventually": cmdEventually,
		},
	})
}

func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE COMMAND [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("running %s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("exit code %d, want %d", got, want)
	}
	if want == 0 {
		return
	}
	stderr := ts.ReadFile("stderr")
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "keymesh: ") {
		ts.Fatalf("a failure must print one line starting with \"keymesh: \" on stderr; got %d line(s):\n%s", len(lines), stderr)
	}
}

// limitArg takes an optional leading "-t DURATION" off args.
func limitArg(ts *testscript.TestScript, args []string) (time.Duration, []string) {
	if len(args) >= 2 && args[0] == "-t" {
		d, err := time.ParseDuration(args[1])
		ts.Check(err)
		return d, args[2:]
	}
	return 30 * time.Second, args
}

// poll calls cond until it returns true or limit passes.
func poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	return true
}

func cmdWaitfile(ts *testscript.TestScript, neg bool, args []string) {
	limit, args := limitArg(ts, args)
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfile [-t DURATION] PATH")
	}
	path := ts.MkAbs(args[0])
	if !poll(limit, func() bool { _, err := os.Stat(path); return err == nil }) {
		ts.Fatalf("%s did not appear within %s", args[0], limit)
	}
}

func cmdEventually(ts *testscript.TestScript, neg bool, args []string) {
	limit, args := limitArg(ts, args)
	if len(args) < 1 {
		ts.Fatalf("usage: [!] eventually [-t DURATION] COMMAND [ARGS...]")
	}
	if !poll(limit, func() bool { return (ts.Exec(args[0], args[1:]...) == nil) != neg }) {
		ts.Fatalf("%s did not %s within %s", strings.Join(args, " "), map[bool]string{false: "succeed", true: "fail"}[neg], limit)
	}
}

func cmdJSONVar(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: jsonvar KEY VAR")
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(ts.ReadFile("stdout")), &obj); err != nil {
		ts.Fatalf("stdout is not one JSON object: %v", err)
	}
	v, ok := obj[args[0]]
	if !ok {
		ts.Fatalf("stdout has no key %q", args[0])
	}
	ts.Setenv(args[1], fmt.Sprint(v))
}

func cmdLoadenv(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: loadenv FILE")
	}
	for _, line := range strings.Split(ts.ReadFile(args[0]), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if fields[0] != "export" {
			ts.Fatalf("line %q does not start with export", line)
		}
		for _, f := range fields[1:] {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				ts.Fatalf("%q is not KEY=VALUE", f)
			}
			ts.Setenv(k, strings.Trim(v, "'"))
		}
	}
}

func cmdFreeport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: freeport VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	addr := ln.Addr().String()
	ts.Check(ln.Close())
	ts.Setenv(args[0], addr)
}
