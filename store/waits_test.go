package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/orderd/orderd/store"
)

// These tests hold the first call's transaction open at the point where it
// owns the token and check that a duplicate waits for it (rather than
// answering from what it can see at once) and then gets the right outcome.

func TestDuplicateWaitsForOwnerThatRollsBack(t *testing.T) {
	e := newEnv(t, store.Options{})
	e.put(t, product("A", 100, "EUR", 10))
	for range 3 {
		e.issue(t, "other") // a few live tokens, as on a quiet service
	}
	tok := e.issue(t, "alice")
	ctx := context.Background()
	owner, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The owner's first steps, as PlaceOrder takes them: claim the
	// outcome row, consume the token.
	hash := store.HashToken(tok.Token)
	if _, err := owner.ExecContext(ctx, "INSERT INTO outcomes (token_hash, customer_id, request_hash, order_id, rejection, body, create_time) VALUES (?, 'alice', ?, NULL, NULL, '', ?)",
		hash, make([]byte, 32), t0); err != nil {
		t.Fatalf("owner's claim: %v", err)
	}
	res, err := owner.ExecContext(ctx, "DELETE FROM tokens WHERE token_hash = ?", hash)
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("owner's DELETE: %d rows, %v", n, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.s.PlaceOrder(ctx, store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: []store.Item{{SKU: "A", Quantity: 1}}})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("PlaceOrder answered while the owner's transaction was open: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	owner.Rollback()
	if err := <-done; err != nil {
		t.Errorf("after the owner rolled back, PlaceOrder = %v, want the order placed", err)
	}
	if n := e.count(t, "orders", ""); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
}

func TestDuplicateWaitsForOwnerThatCommits(t *testing.T) {
	e := newEnv(t, store.Options{})
	e.put(t, product("A", 100, "EUR", 10))
	tok := e.issue(t, "alice")
	req := store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: []store.Item{{SKU: "A", Quantity: 1}}}
	ctx := context.Background()

	// Stall the owner after it consumed the token: it waits for this lock.
	blocker, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var stock int64
	if err := blocker.QueryRowContext(ctx, "SELECT stock FROM products WHERE sku = 'A' FOR UPDATE").Scan(&stock); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out *store.Outcome
		err error
	}
	first, dup := make(chan result, 1), make(chan result, 1)
	go func() { o, err := e.s.PlaceOrder(ctx, req); first <- result{o, err} }()
	// The owner has consumed the token once it waits for the product lock.
	for waiting := 0; waiting == 0; time.Sleep(5 * time.Millisecond) {
		if err := e.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT sku, unit_price_minor%FOR UPDATE'").Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	go func() { o, err := e.s.PlaceOrder(ctx, req); dup <- result{o, err} }()
	select {
	case r := <-dup:
		t.Fatalf("the duplicate answered while the owner was placing: %+v, %v", r.out, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	blocker.Rollback()
	f, d := <-first, <-dup
	if f.err != nil || d.err != nil {
		t.Fatalf("owner: %v; duplicate: %v", f.err, d.err)
	}
	if f.out.Replayed || !d.out.Replayed || f.out.Order.ID != d.out.Order.ID {
		t.Errorf("owner replayed=%v, duplicate replayed=%v, orders %s and %s: want one order, the duplicate a replay",
			f.out.Replayed, d.out.Replayed, f.out.Order.ID, d.out.Order.ID)
	}
}
