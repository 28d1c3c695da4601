package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(mainExit())
}

// mainExit executes the command line of this process and returns its exit code.
// SIGINT and SIGTERM cancel the command's context once; a second signal
// takes the default action.
func mainExit() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, now: time.Now}
	return a.execute(ctx, os.Args[1:])
}

// app carries what commands need from the outside world, so that nothing
// reads globals.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	now    func() time.Time

	output string // --output: "text" or "json"
}

// execute runs one command line and maps its error to an exit code and one
// line on stderr.
func (a *app) execute(ctx context.Context, args []string) int {
	root := a.rootCmd()
	root.SetArgs(dashArgs(root, args))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(a.stderr, "keymesh: %s\n", oneLine(err.Error()))
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "keymesh",
		Short: "Security control plane of a routing mesh",
		Long: `keymesh runs the root servers of a network (an autonomous system's certificate
authority and replicated trust state), registers and runs its nodes, and
talks to their API.

Start with "keymesh dev" for a three-server cluster on loopback, or
"keymesh root bootstrap" for the first server of a real network.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if a.output != "text" && a.output != "json" {
				return usagef("--output must be text or json, not %q", a.output)
			}
			return nil
		},
	}
	groupCmd(root)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.PersistentFlags().StringVarP(&a.output, "output", "o", "text", "output format: text or json (one line, for scripts)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usagef("%v (see `%s --help`)", err, c.CommandPath())
	})
	root.AddCommand(
		a.rootGroupCmd(),
		a.tokensCmd(),
		a.registrationsCmd(),
		a.nodeCmd(),
		a.revokeCmd(),
		a.revocationsCmd(),
		a.tokenCmd(),
		a.authorizeCmd(),
		a.policyCmd(),
		a.routesCmd(),
		a.networkCmd(),
		a.rtrCmd(),
		a.trustCmd(),
		a.peersCmd(),
		a.membersCmd(),
		a.gossipCmd(),
		a.healthCmd(),
		a.devCmd(),
	)
	return root
}

// groupCmd makes cmd a command that only holds subcommands: run alone or
// with an unknown subcommand it is a usage error of one line.
func groupCmd(cmd *cobra.Command) {
	cmd.SuggestionsMinimumDistance = 2
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf("; did you mean %q?", s[0])
		}
		return usagef("%s (see `%s --help`)", msg, c.CommandPath())
	}
	cmd.RunE = func(c *cobra.Command, args []string) error {
		var names []string
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() && sub.Name() != "help" && sub.Name() != "completion" {
				names = append(names, sub.Name())
			}
		}
		return usagef("%s needs a command: %s (see `%s --help`)", c.CommandPath(), strings.Join(names, ", "), c.CommandPath())
	}
}

// exactArgs is cobra.ExactArgs with a usage error that names the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usagef("%s takes %d argument(s), %s; got %d (see `%s --help`)",
				c.CommandPath(), len(names), strings.Join(names, " "), len(args), c.CommandPath())
		}
		return nil
	}
}

// noArgs refuses positional arguments.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q (see `%s --help`)", c.CommandPath(), args[0], c.CommandPath())
	}
	return nil
}

// usageError marks an error the operator makes in calling keymesh: exit 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// maxInput bounds what a command reads from a file or standard input (a
// token, a policy set).
const maxInput = 1 << 20

// readInput reads the file path, or standard input for "-"; what names it
// in messages ("the policy file").
func (a *app) readInput(path, what string) ([]byte, error) {
	if path == "-" {
		b, err := readAtMost(a.stdin, "standard input", maxInput)
		if err != nil {
			return nil, fmt.Errorf("reading %s from standard input: %w", what, err)
		}
		return b, nil
	}
	b, err := readLimited(path, maxInput)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	return b, nil
}

// tokenArg is a token given as an argument, or read from standard input
// for "-". An empty token is a usage error.
func (a *app) tokenArg(arg string) (string, error) {
	tok := arg
	if arg == "-" {
		b, err := a.readInput("-", "the token")
		if err != nil {
			return "", err
		}
		tok = string(b)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", usagef("the token is empty; pass it as the argument, or - to read it from standard input")
	}
	return tok, nil
}

// dashArgs lets positional arguments begin with '-' (key ids and token
// ids are base64url, which may): an argument that names no flag of the
// command is positional. When there is such an argument, every positional
// argument moves behind a "--", in its order, and the flags stay in front,
// so that pflag reads the ids as arguments. A single-dash argument is a
// flag only as "-x", "-x=value" or, for a known shorthand, "-xvalue" of up
// to 16 bytes; an unknown one of up to 16 bytes stays a flag (and a usage
// error); ids are longer. Otherwise args are returned as they are.
func dashArgs(root *cobra.Command, args []string) []string {
	cmd := root
	var front, positional []string
	dashed := false
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if strings.HasPrefix(arg, "--") {
			front = append(front, arg)
			name, _, hasValue := strings.Cut(arg[2:], "=")
			if f := lookupFlag(cmd, name, ""); f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
				i++
				front = append(front, args[i])
			}
			continue
		}
		if len(arg) > 1 && arg[0] == '-' {
			f := lookupFlag(cmd, "", arg[1:2])
			if f != nil && (len(arg) == 2 || arg[2] == '=' || len(arg) <= 16) {
				front = append(front, arg)
				if len(arg) == 2 && f.NoOptDefVal == "" && i+1 < len(args) {
					i++
					front = append(front, args[i])
				}
				continue
			}
			if len(arg) <= 16 {
				front = append(front, arg) // an unknown flag: pflag says so
				continue
			}
			dashed = true
			positional = append(positional, arg)
			continue
		}
		if len(positional) == 0 {
			if sub := subcommand(cmd, arg); sub != nil {
				cmd = sub
				front = append(front, arg)
				continue
			}
		}
		positional = append(positional, arg)
	}
	if !dashed {
		return args
	}
	return append(append(front, "--"), positional...)
}

// lookupFlag finds a flag of cmd or its ancestors by name or shorthand.
func lookupFlag(cmd *cobra.Command, name, short string) *pflag.Flag {
	for c := cmd; c != nil; c = c.Parent() {
		for _, fs := range []*pflag.FlagSet{c.LocalFlags(), c.PersistentFlags()} {
			if name != "" {
				if f := fs.Lookup(name); f != nil {
					return f
				}
			} else if f := fs.ShorthandLookup(short); f != nil {
				return f
			}
		}
	}
	if short == "h" || name == "help" {
		return &pflag.Flag{Name: "help", NoOptDefVal: "true"}
	}
	return nil
}

// subcommand is cmd's subcommand called name (or an alias of it).
func subcommand(cmd *cobra.Command, name string) *cobra.Command {
	for _, c := range cmd.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return c
		}
	}
	return nil
}
