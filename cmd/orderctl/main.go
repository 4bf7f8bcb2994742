// Command orderctl is a command-line client of orderd: it issues order
// tokens, places orders exactly once (retrying with one token), and reads
// and writes orders and products. Run orderctl -h for the commands and the
// exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/orderd/orderd/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes, as documented in usage.
const (
	exitOK       = 0
	exitUsage    = 1
	exitRejected = 2
	exitUnknown  = 3
	exitError    = 4
)

const defaultAddr = "127.0.0.1:50051"

const usageText = `orderctl talks to orderd.

Usage:
  orderctl [global flags] <command> [flags]

Commands:
  token issue    --customer C
  token get      --token T --customer C
  order place    --customer C --item SKU=QTY [--item ...] [--token T]
                 issues a token unless --token is given, then places the
                 order with it, retrying; prints the order and whether it
                 is a replay of an earlier call with the token
  order get      --id ID
  order list     --customer C [--page-size N] [--page-token T]
  product put    --sku S --name N --price MINOR --currency CUR --stock N
                 (price in minor units of the currency, e.g. cents)
  product get    --sku S
  certs create   [--dir .data/certs] [--valid-for 720h] [--force]
                 writes a throwaway CA, a server certificate (127.0.0.1,
                 ::1, localhost), client certificates for
                 spiffe://orderd.local/admin and spiffe://orderd.local/shop,
                 an example policy.json, and bearer-tokens with a token
                 for each (admin.token, shop.token): for local use only

Global flags (also accepted after the command):
  --addr ADDR        orderd address (default ` + defaultAddr + `, env ORDERD_ADDR)
  -o text|json       output format (default text; json is protojson)
  --timeout D        deadline of the whole command, retries included (default 30s)
  --max-attempts N   tries per call, retries included (default 5)
  --tls              use TLS with the system's CAs (implied by the --tls-* flags)
  --tls-ca FILE      CA bundle that signed orderd's certificate
  --tls-cert FILE    client certificate (mTLS), with --tls-key FILE
  --tls-server-name N  name to verify in orderd's certificate
  --bearer TOKEN     bearer token (env ORDERCTL_BEARER), or --bearer-file FILE;
                     refused in plaintext except to a loopback address

Calls are retried on UNAVAILABLE, ABORTED and per-attempt timeouts, with
exponential backoff and the server's RetryInfo delay.

Exit codes:
  0  ok (order place: the order is placed, or was placed earlier with the token)
  1  usage error
  2  rejected: a definitive answer (e.g. OUT_OF_STOCK, NOT_FOUND,
     INVALID_ARGUMENT); do not retry the same request
  3  unknown outcome (e.g. UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL): the
     order may or may not exist. order place prints its token to stderr:
     run it again with --token and the same customer and items, which
     places the order or shows the one placed before
  4  other errors
`

// globals are the flags every command accepts.
type globals struct {
	addr        string
	output      string
	timeout     time.Duration
	maxAttempts int
	transport   transport
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "orderd address (env ORDERD_ADDR)")
	fs.StringVar(&g.output, "o", g.output, "output format: text or json")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline of the whole command, retries included")
	fs.IntVar(&g.maxAttempts, "max-attempts", g.maxAttempts, "tries per call, retries included")
	g.transport.register(fs)
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// run executes the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := globals{addr: defaultAddr, output: "text", timeout: 30 * time.Second, maxAttempts: client.DefaultMaxAttempts}
	if v := os.Getenv("ORDERD_ADDR"); v != "" {
		g.addr = v
	}
	g.transport.bearer = os.Getenv("ORDERCTL_BEARER")
	fs := flag.NewFlagSet("orderctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) < 2 {
		return usage(stderr, usagef("missing command"))
	}
	name := rest[0] + " " + rest[1]
	cmd, ok := commands[name]
	if !ok {
		return usage(stderr, usagef("unknown command %q", name))
	}
	cfs := flag.NewFlagSet("orderctl "+name, flag.ContinueOnError)
	cfs.SetOutput(stderr)
	cfs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: orderctl %s %s\n\nFlags:\n", name, cmd.args)
		cfs.PrintDefaults()
	}
	g.register(cfs)
	act := cmd.setup(cfs)
	if err := cfs.Parse(rest[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if cfs.NArg() > 0 {
		return usage(stderr, usagef("unexpected argument %q", cfs.Arg(0)))
	}
	if g.output != "text" && g.output != "json" {
		return usage(stderr, usagef("-o must be text or json, not %q", g.output))
	}
	set := map[string]bool{}
	cfs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	e := &env{out: stdout, json: g.output == "json", set: set}
	if !cmd.local {
		opts, err := g.transport.options(g.addr)
		if ue := (*usageError)(nil); errors.As(err, &ue) {
			return usage(stderr, err)
		} else if err != nil {
			fmt.Fprintln(stderr, "orderctl:", err)
			return exitError
		}
		c, err := client.Dial(g.addr, append(opts, client.WithMaxAttempts(g.maxAttempts))...)
		if err != nil {
			fmt.Fprintln(stderr, "orderctl:", err)
			return exitError
		}
		defer c.Close()
		e.client = c
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	err := act(ctx, e)
	if ue := (*usageError)(nil); errors.As(err, &ue) {
		fmt.Fprintf(stderr, "orderctl: %v\n", ue)
		cfs.Usage()
		return exitUsage
	}
	return report(stderr, err, g.output == "json")
}

func usage(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "orderctl: %v\n\n%s", err, usageText)
	return exitUsage
}

// hinted adds what to do next to an error.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

// report prints err (if any) to stderr and returns the exit code it means.
func report(stderr io.Writer, err error, asJSON bool) int {
	if err == nil {
		return exitOK
	}
	if !hasStatus(err) {
		fmt.Fprintln(stderr, "orderctl:", err)
		return exitError
	}
	outcome := client.Outcome(err)
	code := exitUnknown
	if outcome == client.Rejected {
		code = exitRejected
	}
	var token, hint string
	var pe *client.PlaceError
	if errors.As(err, &pe) {
		token = pe.Token
	}
	var h *hinted
	if errors.As(err, &h) {
		hint = h.hint
	}
	if asJSON {
		writeErrorJSON(stderr, err, outcome, token)
		return code
	}
	what := "rejected"
	if outcome == client.Unknown {
		what = "outcome unknown"
	}
	fmt.Fprintf(stderr, "orderctl: %s: %s\n", what, describe(err))
	if outcome == client.Unknown && token != "" {
		fmt.Fprintf(stderr, "token: %s\n", token)
	}
	if hint != "" {
		fmt.Fprintln(stderr, hint)
	}
	return code
}

// quoteArgs quotes command-line words for a shell where needed.
func quoteArgs(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\n'\"\\$`!*?[]{}()<>|&;#~") {
			w = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		out[i] = w
	}
	return strings.Join(out, " ")
}
