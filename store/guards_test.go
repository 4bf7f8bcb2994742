package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/orderd/orderd/store"
)

// TestStoreGuardsItsOwnInputs: the API validates requests, but the store
// must not oversell or panic when a caller skips that validation.
func TestStoreGuardsItsOwnInputs(t *testing.T) {
	e := newEnv(t, store.Options{})
	ctx := context.Background()
	e.put(t, product("A", 100, "EUR", 1), product("Z", 0, "EUR", 1))
	for name, items := range map[string][]store.Item{
		"no items":          nil,
		"same sku twice":    {{SKU: "A", Quantity: 1}, {SKU: "A", Quantity: 1}},
		"zero quantity":     {{SKU: "A", Quantity: 0}},
		"negative quantity": {{SKU: "Z", Quantity: -5}},
	} {
		t.Run(name, func(t *testing.T) {
			tok := e.issue(t, "alice")
			before := e.snapshot(t)
			_, err := e.s.PlaceOrder(ctx, store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: items})
			if !errors.Is(err, store.ErrInvalidRequest) {
				t.Fatalf("err = %v, want ErrInvalidRequest", err)
			}
			if diff := cmp.Diff(before, e.snapshot(t)); diff != "" || e.tokenRows(t, tok.Token) != 1 {
				t.Errorf("a rejected request changed something (-before +after):\n%s", diff)
			}
		})
	}
	if _, _, err := e.s.ListOrders(ctx, "alice", 0, nil); !errors.Is(err, store.ErrInvalidRequest) {
		t.Errorf("ListOrders(page size 0) = %v, want ErrInvalidRequest", err)
	}
	if _, err := e.s.Purge(ctx, store.PurgeOptions{TokensBefore: t0, OutcomesBefore: t0}); !errors.Is(err, store.ErrInvalidRequest) {
		t.Errorf("Purge(batch 0) = %v, want ErrInvalidRequest", err)
	}
}

// TestDeadlinesStayDeadlines: a deadline is the caller's, not a database
// outage, so it must not turn into ErrUnavailable.
func TestDeadlinesStayDeadlines(t *testing.T) {
	e := newEnv(t, store.Options{})
	e.put(t, product("A", 100, "EUR", 5))
	tok := e.issue(t, "alice")
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err := e.s.PlaceOrder(ctx, store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: []store.Item{{SKU: "A", Quantity: 1}}})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("PlaceOrder after the deadline = %v, want context.DeadlineExceeded only", err)
	}
	if _, err := e.s.GetProduct(ctx, "A"); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetProduct after the deadline = %v, want context.DeadlineExceeded only", err)
	}
	if e.tokenRows(t, tok.Token) != 1 {
		t.Error("the token was consumed by a call that never ran")
	}
}

// TestFailedPlacementLeavesNoOpenTransaction runs on a pool of one
// connection: a placement that fails after consuming its token (an
// unknown product, a deadline while waiting for a lock) must leave that
// connection without an open transaction, or the next call's START
// TRANSACTION would commit the consumed token implicitly.
func TestFailedPlacementLeavesNoOpenTransaction(t *testing.T) {
	e := newEnv(t, store.Options{MaxOpenConns: 1, MaxIdleConns: 1})
	e.put(t, product("A", 100, "EUR", 10))
	ctx := t.Context()

	unknown := e.issue(t, "alice")
	_, err := e.s.PlaceOrder(ctx, store.PlaceRequest{Token: unknown.Token, CustomerID: "alice",
		Items: []store.Item{{SKU: "A", Quantity: 1}, {SKU: "missing", Quantity: 1}}})
	if !errors.Is(err, store.ErrProductNotFound) {
		t.Fatalf("PlaceOrder with an unknown product: %v, want ErrProductNotFound", err)
	}

	// Another connection locks the product, so the next placement waits
	// inside its transaction until its deadline.
	locker, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := locker.ExecContext(ctx, "SELECT stock FROM products WHERE sku = 'A' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	timedOut := e.issue(t, "alice")
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = e.s.PlaceOrder(dctx, store.PlaceRequest{Token: timedOut.Token, CustomerID: "alice", Items: []store.Item{{SKU: "A", Quantity: 1}}})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("PlaceOrder while the product is locked: %v, want DeadlineExceeded", err)
	}
	if err := locker.Rollback(); err != nil {
		t.Fatal(err)
	}

	// The same single connection places the next order and commits.
	e.placeOrder(t, store.PlaceRequest{Token: e.issue(t, "alice").Token, CustomerID: "alice", Items: []store.Item{{SKU: "A", Quantity: 1}}})
	for name, tok := range map[string]string{"unknown product": unknown.Token, "deadline": timedOut.Token} {
		if n := e.tokenRows(t, tok); n != 1 {
			t.Errorf("%s: token rows = %d, want 1 (the failed placement's DELETE was committed)", name, n)
		}
	}
	if got := e.stock(t, "A"); got != 9 {
		t.Errorf("stock of A = %d, want 9", got)
	}
}
