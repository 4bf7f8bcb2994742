package store_test

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// TestPurge purges 7 expired tokens and 3 old outcomes, next to rows that
// must stay, with Purge and with a paced Purge, in several batch sizes.
func TestPurge(t *testing.T) {
	for _, tc := range []struct {
		batch int
		// waits are the pauses of the paced purge, in rows: one after every
		// batch that deleted rows, except the last batch of all. (The test
		// clock stands still, so the batches take no time.)
		waits []int64
	}{
		{1, []int64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}}, // 7 tokens + 3 outcomes, each followed by a batch
		{3, []int64{3, 3, 1, 3}},                   // tokens 3, 3, 1; outcomes 3, then an empty batch
		{7, []int64{7}},                            // tokens 7, then an empty batch; outcomes 3 (the end)
		{100, []int64{7}},                          // tokens 7; outcomes 3 (the end)
	} {
		for _, paced := range []bool{false, true} {
			name := "batch " + strconv.Itoa(tc.batch)
			if paced {
				name += " paced"
			}
			t.Run(name, func(t *testing.T) { testPurge(t, tc.batch, paced, tc.waits) })
		}
	}
}

// testPurge is one case of TestPurge. Unpaced, it calls Purge; paced, it
// calls Purge at 1000 rows/s and checks the per-batch reports and the
// pauses it asks for (wantWaits, in rows).
func testPurge(t *testing.T, batch int, paced bool, wantWaits []int64) {
	const ttl = time.Hour
	const rate = 1000 // rows per second: a row owes a millisecond
	tokensBefore, outcomesBefore := t0.Add(2*ttl), t0.Add(ttl)
	e := newEnv(t, store.Options{TokenTTL: ttl})
	e.put(t, product("A", 100, "EUR", 100), product("Z", 100, "EUR", 0))
	items := []store.Item{{SKU: "A", Quantity: 1}}

	// At t0: 7 tokens left unused (they expire at t0+1h) and 3
	// outcomes: two orders and an out-of-stock rejection.
	for range 7 {
		e.issue(t, "alice")
	}
	var oldTokens []string
	for _, sku := range []string{"A", "A", "Z"} {
		tok := e.issue(t, "alice").Token
		e.place(t, store.PlaceRequest{Token: tok, CustomerID: "alice", Items: []store.Item{{SKU: sku, Quantity: 1}}})
		oldTokens = append(oldTokens, tok)
	}
	// At t0+1h: a token expiring exactly at the token cutoff.
	e.clock.Advance(ttl)
	boundary := e.issue(t, "alice").Token
	// At t0+2h: two fresh tokens and a fresh outcome.
	e.clock.Advance(ttl)
	fresh := []string{e.issue(t, "alice").Token, e.issue(t, "bob").Token}
	recent := e.issue(t, "alice").Token
	e.placeOrder(t, store.PlaceRequest{Token: recent, CustomerID: "alice", Items: items})
	before := e.snapshot(t)

	var (
		got     store.PurgeResult
		err     error
		batches []store.PurgeResult
		waits   []time.Duration
	)
	if paced {
		got, err = e.s.Purge(t.Context(), store.PurgeOptions{
			TokensBefore: tokensBefore, OutcomesBefore: outcomesBefore, Batch: batch, RowsPerSecond: rate,
			OnBatch: func(r store.PurgeResult) { batches = append(batches, r) },
			Sleep:   recordSleep(&waits),
		})
	} else {
		got, err = e.s.Purge(t.Context(), store.PurgeOptions{TokensBefore: tokensBefore, OutcomesBefore: outcomesBefore, Batch: batch})
	}
	if err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if d := cmp.Diff(store.PurgeResult{Tokens: 7, Outcomes: 3}, got); d != "" {
		t.Errorf("Purge result mismatch (-want +got):\n%s", d)
	}
	if paced {
		var want []store.PurgeResult
		for _, n := range chunks(7, batch) {
			want = append(want, store.PurgeResult{Tokens: n})
		}
		for _, n := range chunks(3, batch) {
			want = append(want, store.PurgeResult{Outcomes: n})
		}
		if d := cmp.Diff(want, batches); d != "" {
			t.Errorf("OnBatch reports mismatch (-want +got):\n%s", d)
		}
		var wantWaitDurations []time.Duration
		for _, rows := range wantWaits {
			wantWaitDurations = append(wantWaitDurations, time.Duration(rows)*time.Second/rate)
		}
		if d := cmp.Diff(wantWaitDurations, waits); d != "" {
			t.Errorf("pauses mismatch (-want +got):\n%s", d)
		}
	}
	want := before
	want["rows tokens"] -= 7
	want["rows outcomes"] -= 3
	if d := cmp.Diff(want, e.snapshot(t)); d != "" {
		t.Errorf("database after Purge mismatch (-want +got):\n%s", d)
	}
	for _, tok := range append([]string{boundary}, fresh...) {
		if n := e.tokenRows(t, tok); n != 1 {
			t.Errorf("token expiring at or after the cutoff: %d rows, want 1", n)
		}
	}
	if n := e.outcomeRows(t, recent); n != 1 {
		t.Errorf("recent outcome: %d rows, want 1", n)
	}

	t.Run("a second run finds nothing", func(t *testing.T) {
		var waits []time.Duration
		got, err := e.s.Purge(t.Context(), store.PurgeOptions{
			TokensBefore: tokensBefore, OutcomesBefore: outcomesBefore, Batch: batch, RowsPerSecond: rate,
			OnBatch: func(r store.PurgeResult) { t.Errorf("OnBatch(%+v) for a purge that deleted nothing", r) },
			Sleep:   recordSleep(&waits),
		})
		if err != nil || got != (store.PurgeResult{}) || len(waits) > 0 {
			t.Errorf("second Purge = %+v, %v, pauses %v; want zero counts and no pause", got, err, waits)
		}
	})
	t.Run("purged outcomes read as unknown tokens and place nothing", func(t *testing.T) {
		before := e.snapshot(t)
		for _, tok := range oldTokens {
			if st, err := e.s.GetToken(t.Context(), tok, "alice"); !errors.Is(err, store.ErrTokenNotFound) {
				t.Errorf("GetToken of a purged outcome = %+v, %v; want ErrTokenNotFound", st, err)
			}
			if out, err := e.s.PlaceOrder(t.Context(), store.PlaceRequest{Token: tok, CustomerID: "alice", Items: items}); !errors.Is(err, store.ErrTokenNotFound) {
				t.Errorf("PlaceOrder with a purged outcome's token = %+v, %v; want ErrTokenNotFound", out, err)
			}
		}
		if d := cmp.Diff(before, e.snapshot(t)); d != "" {
			t.Errorf("the calls changed the database (-want +got):\n%s", d)
		}
	})
	t.Run("kept tokens still answer", func(t *testing.T) {
		if st, err := e.s.GetToken(t.Context(), fresh[0], "alice"); err != nil || st.State != store.TokenIssued {
			t.Errorf("GetToken(fresh) = %+v, %v; want issued", st, err)
		}
		if st, err := e.s.GetToken(t.Context(), recent, "alice"); err != nil || st.State != store.TokenConsumed {
			t.Errorf("GetToken(recent) = %+v, %v; want consumed", st, err)
		}
	})
}

// TestPurgeUnpacedNeverWaits: RowsPerSecond 0 runs the batches back to back
// (and still reports each).
func TestPurgeUnpacedNeverWaits(t *testing.T) {
	e := newEnv(t, store.Options{TokenTTL: time.Minute})
	for range 5 {
		e.issue(t, "alice")
	}
	var batches []store.PurgeResult
	var waits []time.Duration
	got, err := e.s.Purge(t.Context(), store.PurgeOptions{
		TokensBefore: t0.Add(time.Hour), OutcomesBefore: t0.Add(time.Hour), Batch: 2,
		OnBatch: func(r store.PurgeResult) { batches = append(batches, r) },
		Sleep:   recordSleep(&waits),
	})
	if err != nil || got != (store.PurgeResult{Tokens: 5}) {
		t.Fatalf("Purge = %+v, %v; want 5 tokens", got, err)
	}
	if want := []store.PurgeResult{{Tokens: 2}, {Tokens: 2}, {Tokens: 1}}; !cmp.Equal(want, batches) {
		t.Errorf("OnBatch reports = %+v, want %+v", batches, want)
	}
	if len(waits) > 0 {
		t.Errorf("unpaced purge paused: %v", waits)
	}
}

// TestPurgePauseSubtractsBatchTime: a batch's own duration counts towards
// its pause. The clock here moves 10ms at every reading, and Purge reads
// it before and after each DELETE, so every batch takes 10ms.
func TestPurgePauseSubtractsBatchTime(t *testing.T) {
	const step = 10 * time.Millisecond
	var ticks atomic.Int64
	now := func() time.Time { return t0.Add(time.Duration(ticks.Add(1)) * step) }
	s, _ := storetest.New(t, store.Options{Now: now, TokenTTL: time.Minute})
	for range 5 {
		if _, err := s.IssueToken(t.Context(), "alice"); err != nil {
			t.Fatal(err)
		}
	}
	var waits []time.Duration
	got, err := s.Purge(t.Context(), store.PurgeOptions{
		TokensBefore: t0.Add(time.Hour), OutcomesBefore: t0, Batch: 2, RowsPerSecond: 100,
		Sleep: recordSleep(&waits),
	})
	if err != nil || got != (store.PurgeResult{Tokens: 5}) {
		t.Fatalf("Purge = %+v, %v; want 5 tokens", got, err)
	}
	// Batches of 2, 2 and 1 tokens owe 20, 20 and 10ms; each took 10ms. The
	// last one owes nothing more, so the outcomes batch follows at once.
	if want := []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}; !cmp.Equal(want, waits) {
		t.Errorf("pauses = %v, want %v", waits, want)
	}
}

// TestPurgeStopsWhenCanceledDuringPause: ctx ending during the (real) pause
// between batches ends the purge at once, with what it deleted so far.
func TestPurgeStopsWhenCanceledDuringPause(t *testing.T) {
	e := newEnv(t, store.Options{TokenTTL: time.Minute})
	for range 5 {
		e.issue(t, "alice")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	batched := make(chan struct{}, 10)
	go func() {
		<-batched
		cancel()
	}()
	type result struct {
		res store.PurgeResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		// 2 rows at 0.001 rows/s owe a pause of over half an hour.
		res, err := e.s.Purge(ctx, store.PurgeOptions{
			TokensBefore: t0.Add(time.Hour), OutcomesBefore: t0, Batch: 2, RowsPerSecond: 0.001,
			OnBatch: func(store.PurgeResult) { batched <- struct{}{} },
		})
		done <- result{res, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("Purge still running a minute after its context was cancelled")
	}
	if !errors.Is(r.err, context.Canceled) || r.res != (store.PurgeResult{Tokens: 2}) {
		t.Errorf("Purge = %+v, %v; want 2 tokens and context.Canceled", r.res, r.err)
	}
	if n := e.count(t, "tokens", ""); n != 3 {
		t.Errorf("%d tokens left, want 3: no batch after the cancel", n)
	}
}

// TestPurgeRejectsBadOptions: a batch below 1 and a negative or NaN rate are
// ErrInvalidRequest, before anything is deleted.
func TestPurgeRejectsBadOptions(t *testing.T) {
	e := newEnv(t, store.Options{})
	e.issue(t, "alice")
	for _, opts := range []store.PurgeOptions{
		{Batch: 0},
		{Batch: 10, RowsPerSecond: -1},
		{Batch: 10, RowsPerSecond: math.NaN()},
	} {
		opts.TokensBefore, opts.OutcomesBefore = t0.Add(24*time.Hour), t0.Add(24*time.Hour)
		if got, err := e.s.Purge(t.Context(), opts); !errors.Is(err, store.ErrInvalidRequest) || got != (store.PurgeResult{}) {
			t.Errorf("Purge(batch %d, rate %v) = %+v, %v; want ErrInvalidRequest", opts.Batch, opts.RowsPerSecond, got, err)
		}
	}
	if n := e.count(t, "tokens", ""); n != 1 {
		t.Errorf("%d tokens left, want 1", n)
	}
}

// chunks splits n rows into the non-empty batches of at most batch rows a
// purge deletes them in.
func chunks(n int64, batch int) []int64 {
	var out []int64
	for n > 0 {
		c := min(n, int64(batch))
		out = append(out, c)
		n -= c
	}
	return out
}

// recordSleep is a PurgeOptions.Sleep that records the pauses instead of
// waiting.
func recordSleep(waits *[]time.Duration) func(context.Context, time.Duration) error {
	return func(_ context.Context, d time.Duration) error {
		*waits = append(*waits, d)
		return nil
	}
}
