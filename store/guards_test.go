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
	if _, err := e.s.Purge(ctx, t0, t0, 0); !errors.Is(err, store.ErrInvalidRequest) {
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
