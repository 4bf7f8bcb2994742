package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

func TestJanitorPurgesExpiredTokens(t *testing.T) {
	clk := &clock{}
	st, _ := storetest.New(t, store.Options{Now: clk.Now, TokenTTL: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Issued two hours ago: expired, and past the 30-minute grace. The
	// janitor itself uses the wall clock.
	clk.Advance(-2 * time.Hour)
	expired, err := st.IssueToken(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	live, err := st.IssueToken(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	purged := make(chan store.PurgeResult, 100)
	go server.RunJanitor(ctx, st, server.JanitorOptions{
		Interval: 10 * time.Millisecond, Batch: 10, TokenGrace: 30 * time.Minute, OutcomeRetention: time.Hour,
		OnPurge: func(r store.PurgeResult) { purged <- r },
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var total int64
	for total == 0 {
		select {
		case r := <-purged:
			total += r.Tokens
		case <-ctx.Done():
			t.Fatal("the janitor purged nothing")
		}
	}
	cancel()
	if total != 1 {
		t.Errorf("purged %d tokens, want 1", total)
	}
	if _, err := st.GetToken(context.Background(), live.Token, "alice"); err != nil {
		t.Errorf("the unexpired token was purged: %v", err)
	}
	if _, err := st.GetToken(context.Background(), expired.Token, "alice"); err != store.ErrTokenNotFound {
		t.Errorf("expired token after purge: %v, want ErrTokenNotFound", err)
	}
}

// TestJanitorPacesAndReportsEachBatch: the janitor reports every batch to
// OnPurge (here the metric) as it goes, asks for the pauses that keep it to
// RowsPerSecond, and logs one line per purge.
func TestJanitorPacesAndReportsEachBatch(t *testing.T) {
	st, _ := storeWithExpiredTokens(t, 25)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	metrics := server.NewMetrics(reg)
	var logs bytes.Buffer
	var waits []time.Duration // written by the janitor, read once it is done
	reports := make(chan store.PurgeResult, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		server.RunJanitor(ctx, st, server.JanitorOptions{
			Interval: 10 * time.Millisecond, Batch: 10, RowsPerSecond: 5,
			TokenGrace: 30 * time.Minute, OutcomeRetention: time.Hour,
			OnPurge: func(r store.PurgeResult) {
				metrics.Purged(r)
				reports <- r
			},
			Sleep: func(_ context.Context, d time.Duration) error {
				waits = append(waits, d)
				return nil
			},
		}, slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	var got []store.PurgeResult
	var total int64
	for total < 25 {
		select {
		case r := <-reports:
			got = append(got, r)
			total += r.Tokens
		case <-time.After(time.Minute):
			t.Fatalf("the janitor reported %+v, then nothing for a minute", got)
		}
	}
	cancel()
	waitDone(t, done)

	if want := []store.PurgeResult{{Tokens: 10}, {Tokens: 10}, {Tokens: 5}}; !cmp.Equal(want, got) {
		t.Errorf("OnPurge got %+v, want one report per batch: %+v", got, want)
	}
	for table, want := range map[string]float64{"tokens": 25, "outcomes": 0} {
		if v := counterValue(t, reg, "orderd_janitor_deleted_total", map[string]string{"table": table}); v != want {
			t.Errorf("orderd_janitor_deleted_total{table=%q} = %v, want %v", table, v, want)
		}
	}
	// 10 rows at 5 rows/s owe 2s; the last 5 tokens owe 1s before the
	// outcomes batch. Later purges find nothing and owe nothing.
	if want := []time.Duration{2 * time.Second, 2 * time.Second, time.Second}; !cmp.Equal(want, waits) {
		t.Errorf("pauses = %v, want %v", waits, want)
	}
	if n := strings.Count(logs.String(), `msg="janitor purged"`); n != 1 || !strings.Contains(logs.String(), "tokens=25 outcomes=0") {
		t.Errorf("want one \"janitor purged\" line with the totals, got %d in:\n%s", n, logs.String())
	}
}

// TestJanitorStopsDuringPause: ctx ending while the janitor pauses between
// batches (really waiting) stops it at once.
func TestJanitorStopsDuringPause(t *testing.T) {
	st, dsn := storeWithExpiredTokens(t, 5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reports := make(chan store.PurgeResult, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// 2 rows at 0.001 rows/s owe a pause of over half an hour.
		server.RunJanitor(ctx, st, server.JanitorOptions{
			Interval: 10 * time.Millisecond, Batch: 2, RowsPerSecond: 0.001,
			TokenGrace: 30 * time.Minute, OutcomeRetention: time.Hour,
			OnPurge: func(r store.PurgeResult) { reports <- r },
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	select {
	case r := <-reports:
		if r != (store.PurgeResult{Tokens: 2}) {
			t.Errorf("first report %+v, want 2 tokens", r)
		}
	case <-time.After(time.Minute):
		t.Fatal("the janitor purged nothing")
	}
	cancel()
	waitDone(t, done)
	if len(reports) > 0 {
		t.Errorf("reports after the first: %+v", <-reports)
	}
	var n int
	if err := storetest.DB(t, dsn).QueryRow("SELECT COUNT(*) FROM tokens").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("%d tokens left, want 3: no batch after the cancel", n)
	}
}

// waitDone waits for a janitor to return after its context was cancelled.
func waitDone(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("RunJanitor still running a minute after its context was cancelled")
	}
}

// storeWithExpiredTokens is a store on a fresh database whose clock stands
// still two hours ago, holding n of alice's tokens, all long expired. A
// purge batch takes no time on that clock, so each pause is exactly
// rows/rate.
func storeWithExpiredTokens(t *testing.T, n int) (*store.Store, string) {
	t.Helper()
	issued := time.Now().Add(-2 * time.Hour)
	st, dsn := storetest.New(t, store.Options{Now: func() time.Time { return issued }, TokenTTL: time.Minute})
	for range n {
		if _, err := st.IssueToken(t.Context(), "alice"); err != nil {
			t.Fatal(err)
		}
	}
	return st, dsn
}
