package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderd/orderd/store/storetest"
)

// TestRunQuick runs the whole benchmark with tiny durations against a fresh
// database on the test server and checks the shape of its report, not its
// numbers: every scenario at every concurrency, orderd's storm without a
// duplicate, output that parses.
func TestRunQuick(t *testing.T) {
	dsn := storetest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := buildOrderd(ctx, root, t.TempDir(), raceFlags...)
	if err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	args := []string{"-quick", "-c", "1,2", "-d", "300ms", "-warmup", "100ms", "-growth=false", "-products", "50",
		"-json", "-dsn", dsn, "-orderd", bin, "-orderd-log-level", "warn", "-round-trip-calls", "20"}
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
	}

	for _, c := range []int{1, 2} {
		for _, sc := range allScenarios {
			r := rep.find(sc, c)
			if r == nil {
				t.Errorf("report has no %s at c%d", sc, c)
				continue
			}
			if r.AllOps == 0 {
				t.Errorf("%s c%d: no op succeeded (errors %v, examples %v)", sc, c, r.Errors, r.ErrorExamples)
			}
			if len(r.Errors) > 0 {
				t.Errorf("%s c%d: errors %v, examples %v", sc, c, r.Errors, r.ErrorExamples)
			}
			if r.StatementsPerOp == nil {
				t.Errorf("%s c%d: no statements per op", sc, c)
			}
		}
		storm := rep.find(scStorm, c)
		if storm == nil {
			continue
		}
		if storm.Duplicates != 0 {
			t.Errorf("storm c%d: %d duplicate orders in the answers", c, storm.Duplicates)
		}
		if storm.DBDuplicates == nil || *storm.DBDuplicates != 0 {
			t.Errorf("storm c%d: duplicates in the orders table: %v", c, storm.DBDuplicates)
		}
		if len(storm.Notes) > 0 {
			t.Errorf("storm c%d: %v", c, storm.Notes)
		}
		for _, sc := range []string{scFlow, scPlace} {
			if r := rep.find(sc, c); r != nil && (r.FloorThroughputRatio == nil || r.FloorP99Ratio == nil) {
				t.Errorf("%s c%d: no ratio to its SQL floor", sc, c)
			}
		}
	}
	// The round trips BENCHMARKS.md explains, counted on the wire: a new
	// order is START TRANSACTION + DELETE token, SELECT … FOR UPDATE, the
	// writes + COMMIT; a replay is START TRANSACTION + DELETE (nothing),
	// SELECT outcome, COMMIT.
	wantRT := RoundTrips{Calls: 20, IssueToken: 1, PlaceOrder: 3, Replay: 3, FloorIssue: 1, FloorPlace: 3}
	if rep.RoundTrips == nil || *rep.RoundTrips != wantRT {
		t.Errorf("round trips per call = %+v, want %+v", rep.RoundTrips, wantRT)
	}
	if !slices.ContainsFunc(rep.Targets, func(tg Target) bool { return strings.HasPrefix(tg.Name, "storm") && tg.Met }) {
		t.Errorf("targets do not show the storm met: %+v", rep.Targets)
	}

	var md bytes.Buffer
	if err := writeMarkdown(&md, &rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| flow | 1 |", "| storm | 2 |", "| naive | 2 |", "### Targets"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown report lacks %q:\n%s", want, md.String())
		}
	}
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		conc   []int
		d      time.Duration
		growth bool
	}{
		{"defaults", nil, []int{1, 4, 16, 64}, 10 * time.Second, true},
		{"quick", []string{"-quick"}, []int{1, 4}, 2 * time.Second, false},
		{"explicit flags win over quick", []string{"-quick", "-c", "2", "-d", "1s", "-growth"}, []int{2}, time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig(tc.args, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Concurrency, tc.conc) || cfg.Duration != tc.d || cfg.Growth != tc.growth {
				t.Errorf("got c=%v d=%v growth=%v, want c=%v d=%v growth=%v", cfg.Concurrency, cfg.Duration, cfg.Growth, tc.conc, tc.d, tc.growth)
			}
			if !slices.Equal(cfg.Scenarios, allScenarios) {
				t.Errorf("scenarios %v, want %v", cfg.Scenarios, allScenarios)
			}
		})
	}
	for _, bad := range [][]string{{"-c", "0"}, {"-c", "x"}, {"-scenarios", "nope"}, {"-d", "0"}, {"extra"}} {
		if _, err := parseConfig(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("parseConfig(%q) accepted", bad)
		}
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := percentile(lat, tc.q); got != tc.want {
			t.Errorf("percentile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %v, want 0", got)
	}
}

func TestProcCPU(t *testing.T) {
	if _, err := procCPU("self"); err != nil {
		t.Fatal(err)
	}
	if _, err := procStatusKB("self", "VmHWM"); err != nil {
		t.Fatal(err)
	}
	if _, err := systemBusy(); err != nil {
		t.Fatal(err)
	}
}
