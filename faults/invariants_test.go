package faults

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderd/orderd/client"
)

// op is one client operation as the history records it (Jepsen-style):
// its token, request, every attempt's error code, and the final result.
type op struct {
	Token    string
	Customer string
	Items    []client.Item

	mu       sync.Mutex
	Attempts int          // calls that reached the client's retry loop
	Failed   []codes.Code // the code of each failed attempt, in order
	Final    codes.Code   // the last call's code (OK when placed)
	OrderID  string       // the order the client was told about
	Replayed bool
	Rejected string // ErrorInfo reason of a definitive rejection
}

type opKey struct{}

// countAttempt is the client's OnRetry hook: it records the failed attempt
// on the op in ctx.
func countAttempt(ctx context.Context, _ uint, err error) {
	if o, ok := ctx.Value(opKey{}).(*op); ok {
		o.mu.Lock()
		o.Failed = append(o.Failed, status.Code(err))
		o.mu.Unlock()
	}
}

// place runs o once through the client (which retries), recording the
// result. It reports whether the outcome is now known (placed or
// definitively rejected).
func (l *lab) place(ctx context.Context, o *op) bool {
	ctx = context.WithValue(ctx, opKey{}, o)
	p, err := l.client.PlaceOrderWithToken(ctx, o.Token, o.Customer, o.Items)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.Attempts++
	o.Final = status.Code(err)
	switch {
	case err == nil:
		o.OrderID, o.Replayed = p.Order.GetId(), p.Replayed
		return true
	case client.Outcome(err) == client.Rejected:
		o.Rejected = client.Reason(err)
		return true
	}
	return false
}

// history is every op of a scenario.
type history struct {
	mu  sync.Mutex
	ops []*op
}

func (h *history) add(o *op) {
	h.mu.Lock()
	h.ops = append(h.ops, o)
	h.mu.Unlock()
}

// resolve heals nothing itself: after the faults are removed, it retries
// every op whose outcome is unknown, with its own token, until known.
func (l *lab) resolve(t testing.TB, h *history) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, o := range h.ops {
		if o.OrderID != "" || o.Rejected != "" {
			continue
		}
		for !l.place(ctx, o) {
			if ctx.Err() != nil {
				t.Fatalf("token %s…: outcome still unknown after healing: %v", o.Token[:8], o.Final)
			}
		}
	}
}

// checkInvariants verifies, on the database directly:
//  1. at most one order per token;
//  2. stock conserved: initial − ordered = current, never negative;
//  3. every OK a client received is the stored outcome of its token;
//  4. no token consumed without a stored outcome, and none stored twice:
//     each token is either still unused or has exactly one outcome, and
//     every order has its outcome.
func (l *lab) checkInvariants(t testing.TB, h *history) {
	t.Helper()
	ctx := context.Background()
	q := func(query string, args ...any) int {
		t.Helper()
		var n int
		if err := l.direct.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	if n := q(`SELECT COUNT(*) FROM (SELECT token_hash FROM orders GROUP BY token_hash HAVING COUNT(*) > 1) d`); n != 0 {
		t.Errorf("invariant 1: %d tokens have more than one order", n)
	}
	for sku, initial := range l.stock {
		var current, ordered int64
		if err := l.direct.QueryRowContext(ctx, `SELECT stock, (SELECT COALESCE(SUM(quantity), 0) FROM order_lines WHERE sku = ?) FROM products WHERE sku = ?`, sku, sku).Scan(&current, &ordered); err != nil {
			t.Fatal(err)
		}
		if current < 0 || initial-ordered != current {
			t.Errorf("invariant 2: %s: initial %d − ordered %d ≠ current %d", sku, initial, ordered, current)
		}
	}
	if n := q(`SELECT COUNT(*) FROM orders o LEFT JOIN outcomes oc ON oc.token_hash = o.token_hash AND oc.order_id = o.id WHERE oc.token_hash IS NULL`); n != 0 {
		t.Errorf("invariant 4: %d orders without their stored outcome", n)
	}
	for _, o := range h.ops {
		hash := sha256.Sum256([]byte(o.Token))
		unused := q(`SELECT COUNT(*) FROM tokens WHERE token_hash = ?`, hash[:])
		var stored string
		err := l.direct.QueryRowContext(ctx, `SELECT COALESCE(order_id, CONCAT('rejected:', rejection)) FROM outcomes WHERE token_hash = ?`, hash[:]).Scan(&stored)
		outcomes := 1
		if errors.Is(err, sql.ErrNoRows) {
			outcomes = 0
		} else if err != nil {
			t.Fatal(err)
		}
		if unused+outcomes != 1 {
			t.Errorf("invariant 4: token %s…: %d unused rows and %d outcomes, want exactly one of them", o.Token[:8], unused, outcomes)
		}
		switch {
		case o.OrderID != "" && stored != o.OrderID:
			t.Errorf("invariant 3: token %s…: the client was told order %s, the stored outcome is %q", o.Token[:8], o.OrderID, stored)
		case o.Rejected == "OUT_OF_STOCK" && stored != "rejected:out_of_stock":
			t.Errorf("invariant 3: token %s…: the client was told OUT_OF_STOCK, the stored outcome is %q", o.Token[:8], stored)
		}
	}
}

// summary is a one-line account of a history for the test log.
func (h *history) summary() string {
	var placed, replayed, rejected, retried, attempts int
	for _, o := range h.ops {
		switch {
		case o.OrderID != "":
			placed++
		case o.Rejected != "":
			rejected++
		}
		if o.Replayed {
			replayed++
		}
		if len(o.Failed) > 0 {
			retried++
		}
		attempts += len(o.Failed) + o.Attempts
	}
	return fmt.Sprintf("%d ops: %d placed (%d answered as replays), %d rejected, %d needed retries, %d attempts in all",
		len(h.ops), placed, replayed, rejected, retried, attempts)
}
