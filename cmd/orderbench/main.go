// Command orderbench measures orderd end to end in one run: it starts a
// private MariaDB (unless -dsn is given), builds and starts orderd as a child
// process, and drives it over gRPC at several concurrencies next to the
// floor of the same SQL sent directly with database/sql, an exactly-once
// storm of duplicate calls, and the naive check-then-insert baseline. It
// prints a Markdown report (or JSON with -json).
//
//	go run ./cmd/orderbench            # the full run (about 8 minutes)
//	go run ./cmd/orderbench -quick     # concurrency 1,4 for 2s each, no growth phase
//
// Progress goes to stderr, the report to stdout. docs/BENCHMARKS.md explains
// the scenarios and the latest results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "orderbench:", err)
		os.Exit(1)
	}
}

// run parses args, runs the benchmark and writes the report to stdout.
// Progress and orderd's failures go to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, log: stderr}
	rep, err := b.run(ctx)
	if err != nil {
		return err
	}
	rep.Command = "orderbench " + strings.Join(args, " ")
	if cfg.JSON {
		return writeJSON(stdout, rep)
	}
	return writeMarkdown(stdout, rep)
}

// allScenarios are the scenarios in the order they run at each concurrency:
// each orderd scenario next to its SQL floor, so that both see the same
// machine load and table sizes.
var allScenarios = []string{scFlow, scRaw, scPlace, scRawPlace, scStorm, scNaive}

const (
	scFlow     = "flow"
	scRaw      = "raw"
	scPlace    = "place"
	scRawPlace = "raw-place"
	scStorm    = "storm"
	scNaive    = "naive"
)

// isFloor reports whether a scenario runs without orderd.
func isFloor(sc string) bool {
	switch sc {
	case scRaw, scRawPlace, scNaive:
		return true
	}
	return false
}

// config is every setting of a run.
type config struct {
	DSN            string
	DBPort         int
	KeepDB         bool
	Concurrency    []int
	Duration       time.Duration
	Warmup         time.Duration
	Quick          bool
	Growth         bool
	GrowthOrders   int
	GrowthTokens   int
	GrowthConc     int
	Products       int
	Conns          int
	StormCallers   int
	Scenarios      []string
	JSON           bool
	OrderdBin      string
	OrderdLogLevel string
	OrderdLog      string
	OrderdArgs     []string
	ProfileDir     string
	BufferPool     string
	FloorTokenCap  int
	RoundTripCalls int
}

func parseConfig(args []string, out io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("orderbench", flag.ContinueOnError)
	fs.SetOutput(out)
	var conc, scen, extra string
	fs.StringVar(&c.DSN, "dsn", "", "use this database (go-sql-driver DSN naming a dedicated database) instead of a private MariaDB")
	fs.IntVar(&c.DBPort, "db-port", 33063, "port of the private MariaDB (data in .data/bench-mysql)")
	fs.BoolVar(&c.KeepDB, "keep-db", false, "leave the private MariaDB running with the orderbench database at the end")
	fs.StringVar(&conc, "c", "1,4,16,64", "concurrencies, comma-separated (storm and naive: groups of -storm-callers callers)")
	fs.DurationVar(&c.Duration, "d", 10*time.Second, "measured duration of each scenario at each concurrency")
	fs.DurationVar(&c.Warmup, "warmup", 0, "unmeasured warm-up before each measurement (default min(1s, d/5))")
	fs.BoolVar(&c.Quick, "quick", false, "concurrency 1,4, 2s each, no growth phase (explicit -c, -d, -growth win)")
	fs.BoolVar(&c.Growth, "growth", true, "run the growth phase: pre-fill orders and expired tokens, rerun flow, then with the janitor")
	fs.IntVar(&c.GrowthOrders, "growth-orders", 1_000_000, "orders (with lines and outcomes) pre-filled by the growth phase")
	fs.IntVar(&c.GrowthTokens, "growth-tokens", 1_000_000, "expired unused tokens pre-filled by the growth phase")
	fs.IntVar(&c.GrowthConc, "growth-c", 16, "concurrency of the growth phase runs")
	fs.IntVar(&c.Products, "products", 1000, "products seeded (with stock that never runs out)")
	fs.IntVar(&c.Conns, "conns", 1, "gRPC client connections shared by the callers")
	fs.IntVar(&c.StormCallers, "storm-callers", 8, "concurrent callers per token in storm (and per key in naive)")
	fs.StringVar(&scen, "scenarios", strings.Join(allScenarios, ","), "scenarios to run, comma-separated")
	fs.IntVar(&c.RoundTripCalls, "round-trip-calls", 200, "calls, one at a time, of each kind whose database round trips are counted on the wire (0: skip)")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON instead of Markdown")
	fs.StringVar(&c.OrderdBin, "orderd", "", "orderd binary to run (default: go build ./cmd/orderd into a temporary directory)")
	fs.StringVar(&c.OrderdLogLevel, "orderd-log-level", "info", "orderd's -log-level (its log goes to a file in the temporary directory)")
	fs.StringVar(&c.OrderdLog, "orderd-log", "", "append orderd's log to this file (default: a temporary file, removed)")
	fs.StringVar(&extra, "orderd-args", "", "extra orderd flags, space-separated (e.g. \"-db-max-open=64\")")
	fs.StringVar(&c.ProfileDir, "profile", "", "also profile orderd under flow at -growth-c concurrency and write its CPU and allocation profiles to this directory")
	fs.IntVar(&c.FloorTokenCap, "floor-token-cap", 100, "the floor issues tokens like orderd with this -max-outstanding-tokens (orderd's default; 0: the plain INSERT of an uncapped orderd)")
	fs.StringVar(&c.BufferPool, "db-buffer-pool", "1G", "innodb_buffer_pool_size of the private MariaDB (the growth tables do not fit the 128M default)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.Quick {
		if !set["c"] {
			conc = "1,4"
		}
		if !set["d"] {
			c.Duration = 2 * time.Second
		}
		if !set["growth"] {
			c.Growth = false
		}
	}
	for f := range strings.SplitSeq(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-c: %q is not a positive integer", f)
		}
		c.Concurrency = append(c.Concurrency, n)
	}
	for f := range strings.SplitSeq(scen, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		known := false
		for _, s := range allScenarios {
			known = known || s == f
		}
		if !known {
			return nil, fmt.Errorf("-scenarios: unknown scenario %q (known: %s)", f, strings.Join(allScenarios, ", "))
		}
		c.Scenarios = append(c.Scenarios, f)
	}
	if c.Duration <= 0 {
		return nil, errors.New("-d must be positive")
	}
	if !set["warmup"] {
		c.Warmup = min(time.Second, c.Duration/5)
	}
	if c.FloorTokenCap < 0 {
		return nil, errors.New("-floor-token-cap must not be negative")
	}
	if c.Products < 2 || c.Conns < 1 || c.StormCallers < 2 || c.GrowthConc < 1 {
		return nil, errors.New("-products and -storm-callers must be at least 2, -conns and -growth-c at least 1")
	}
	c.OrderdArgs = strings.Fields(extra)
	return c, nil
}

// runs reports whether scenario name is selected.
func (c *config) runs(name string) bool {
	for _, s := range c.Scenarios {
		if s == name {
			return true
		}
	}
	return false
}
