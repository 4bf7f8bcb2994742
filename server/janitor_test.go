package server_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

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
