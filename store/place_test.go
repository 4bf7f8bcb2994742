package store_test

import (
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/orderd/orderd/store"
)

func TestPlaceOrderPlacesFirstOrder(t *testing.T) {
	e := newEnv(t, store.Options{})
	e.put(t, product("A", 1250, "EUR", 10), product("B", 399, "EUR", 5), product("C", 100, "EUR", 7))
	tok := e.issue(t, "alice")
	e.clock.Advance(time.Minute)

	out := e.place(t, store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: []store.Item{{SKU: "B", Quantity: 2}, {SKU: "A", Quantity: 3}}})

	if out.Replayed || out.Rejection != nil || out.Order == nil {
		t.Fatalf("PlaceOrder = %+v, want a new order (Replayed false, no rejection)", out)
	}
	if id, err := uuid.Parse(out.Order.ID); err != nil || id.Version() != 7 {
		t.Errorf("order ID %q: want a UUIDv7 (parse error %v)", out.Order.ID, err)
	}
	priceA, priceB := e.price(t, "A"), e.price(t, "B")
	want := &store.Order{
		ID:         out.Order.ID,
		CustomerID: "alice",
		Lines: []store.Line{
			{SKU: "A", Quantity: 3, UnitPriceMinor: priceA, LineTotalMinor: 3 * priceA},
			{SKU: "B", Quantity: 2, UnitPriceMinor: priceB, LineTotalMinor: 2 * priceB},
		},
		TotalMinor: 3*priceA + 2*priceB,
		Currency:   "EUR",
		Status:     store.OrderStatusPlaced,
		CreateTime: t0.Add(time.Minute),
	}
	if d := cmp.Diff(want, out.Order); d != "" {
		t.Errorf("placed order mismatch (-want +got):\n%s", d)
	}

	t.Run("consumes the token", func(t *testing.T) {
		if n := e.tokenRows(t, tok.Token); n != 0 {
			t.Errorf("token rows = %d, want 0", n)
		}
	})
	t.Run("reserves stock", func(t *testing.T) {
		got := map[string]int64{"A": e.stock(t, "A"), "B": e.stock(t, "B"), "C": e.stock(t, "C")}
		if d := cmp.Diff(map[string]int64{"A": 7, "B": 3, "C": 7}, got); d != "" {
			t.Errorf("stock mismatch (-want +got):\n%s", d)
		}
	})
	t.Run("writes the order row", func(t *testing.T) {
		type orderRow struct {
			CustomerID string
			TokenHash  []byte
			Total      int64
			Currency   string
			Status     int
			CreateTime time.Time
		}
		var got orderRow
		err := e.db.QueryRowContext(t.Context(), "SELECT customer_id, token_hash, total_minor, currency, status, create_time FROM orders WHERE id = ?", want.ID).
			Scan(&got.CustomerID, &got.TokenHash, &got.Total, &got.Currency, &got.Status, &got.CreateTime)
		if err != nil {
			t.Fatalf("read order row: %v", err)
		}
		wantRow := orderRow{"alice", store.HashToken(tok.Token), want.TotalMinor, "EUR", int(store.OrderStatusPlaced), want.CreateTime}
		if d := cmp.Diff(wantRow, got); d != "" {
			t.Errorf("order row mismatch (-want +got):\n%s", d)
		}
		if n := e.count(t, "orders", ""); n != 1 {
			t.Errorf("orders rows = %d, want 1", n)
		}
	})
	t.Run("writes the line rows", func(t *testing.T) {
		rows, err := e.db.QueryContext(t.Context(), "SELECT sku, quantity, unit_price_minor, line_total_minor FROM order_lines WHERE order_id = ? ORDER BY line_no", want.ID)
		if err != nil {
			t.Fatalf("read lines: %v", err)
		}
		defer rows.Close()
		var got []store.Line
		for rows.Next() {
			var l store.Line
			if err := rows.Scan(&l.SKU, &l.Quantity, &l.UnitPriceMinor, &l.LineTotalMinor); err != nil {
				t.Fatalf("scan line: %v", err)
			}
			got = append(got, l)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("read lines: %v", err)
		}
		if d := cmp.Diff(want.Lines, got); d != "" {
			t.Errorf("order_lines mismatch (-want +got):\n%s", d)
		}
		if n := e.count(t, "order_lines", ""); n != 2 {
			t.Errorf("order_lines rows = %d, want 2", n)
		}
	})
	t.Run("stores the outcome", func(t *testing.T) {
		var customer string
		var orderID, rejection sql.NullString
		var ctime time.Time
		err := e.db.QueryRowContext(t.Context(), "SELECT customer_id, order_id, rejection, create_time FROM outcomes WHERE token_hash = ?", store.HashToken(tok.Token)).
			Scan(&customer, &orderID, &rejection, &ctime)
		if err != nil {
			t.Fatalf("read outcome row: %v", err)
		}
		if customer != "alice" || orderID.String != want.ID || rejection.Valid || !ctime.Equal(want.CreateTime) {
			t.Errorf("outcome row = (customer %q, order %v, rejection %v, time %v), want (alice, %s, NULL, %v)",
				customer, orderID, rejection, ctime, want.ID, want.CreateTime)
		}
		if n := e.count(t, "outcomes", ""); n != 1 {
			t.Errorf("outcomes rows = %d, want 1", n)
		}
	})
	t.Run("GetOrder returns the same order", func(t *testing.T) {
		got, err := e.s.GetOrder(t.Context(), want.ID)
		if err != nil {
			t.Fatalf("GetOrder: %v", err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("GetOrder mismatch (-want +got):\n%s", d)
		}
	})
}

func TestPlaceOrderReplaysStoredOrder(t *testing.T) {
	items := []store.Item{{SKU: "A", Quantity: 2}, {SKU: "B", Quantity: 1}}
	tests := []struct {
		name        string
		retryItems  []store.Item
		beforeRetry func(testing.TB, *env)
	}{
		{name: "same items", retryItems: items},
		{name: "items in another order", retryItems: []store.Item{{SKU: "B", Quantity: 1}, {SKU: "A", Quantity: 2}}},
		{
			name:       "old prices after a price change",
			retryItems: items,
			beforeRetry: func(tb testing.TB, e *env) {
				e.put(tb, product("A", 9999, "EUR", 100), product("B", 1, "EUR", 100))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, store.Options{})
			e.put(t, product("A", 500, "EUR", 10), product("B", 250, "EUR", 10))
			tok := e.issue(t, "alice")
			first := e.placeOrder(t, store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: items})
			stockAfterFirst := map[string]int64{"A": e.stock(t, "A"), "B": e.stock(t, "B")}
			e.clock.Advance(time.Minute) // a fresh order would get another create time
			if tt.beforeRetry != nil {
				tt.beforeRetry(t, e)
			}
			stockBeforeRetry := map[string]int64{"A": e.stock(t, "A"), "B": e.stock(t, "B")}

			for i := range 2 {
				out := e.place(t, store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: tt.retryItems})
				if !out.Replayed || out.Rejection != nil {
					t.Fatalf("retry %d: Replayed = %v, Rejection = %v; want a replayed order", i+1, out.Replayed, out.Rejection)
				}
				if d := cmp.Diff(first, out.Order); d != "" {
					t.Errorf("retry %d: replayed order mismatch (-want +got):\n%s", i+1, d)
				}
			}
			if d := cmp.Diff(stockBeforeRetry, map[string]int64{"A": e.stock(t, "A"), "B": e.stock(t, "B")}); d != "" {
				t.Errorf("retries changed stock (-want +got):\n%s", d)
			}
			if d := cmp.Diff(map[string]int64{"A": 8, "B": 9}, stockAfterFirst); d != "" {
				t.Errorf("first call's stock mismatch (-want +got):\n%s", d)
			}
			if n := e.count(t, "orders", ""); n != 1 {
				t.Errorf("orders rows = %d, want 1", n)
			}
			if n := e.count(t, "outcomes", ""); n != 1 {
				t.Errorf("outcomes rows = %d, want 1", n)
			}
			got, err := e.s.GetOrder(t.Context(), first.ID)
			if err != nil {
				t.Fatalf("GetOrder: %v", err)
			}
			if d := cmp.Diff(first, got); d != "" {
				t.Errorf("GetOrder after retries mismatch (-want +got):\n%s", d)
			}
		})
	}
}

// TestPlaceOrderTokenRowRestored covers a token row that reappears after
// its order was placed (restored from a backup, say). With its outcome
// still stored, the claim meets the outcome's key and the call replays.
// With the outcome gone, the claim succeeds and the orders table's UNIQUE
// token hash stops the writes, which travel as one multi-statement round
// trip: the failing statement (the 2nd of 5) must come back as an error,
// not be lost behind the UPDATE before it, and the rollback must undo the
// claim, the DELETE and the stock.
func TestPlaceOrderTokenRowRestored(t *testing.T) {
	items := []store.Item{{SKU: "A", Quantity: 2}, {SKU: "B", Quantity: 1}}
	for _, outcomeKept := range []bool{true, false} {
		t.Run(fmt.Sprintf("outcome kept %v", outcomeKept), func(t *testing.T) {
			e := newEnv(t, store.Options{})
			e.put(t, product("A", 500, "EUR", 10), product("B", 250, "EUR", 10))
			tok := e.issue(t, "alice")
			req := store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: items}
			first := e.placeOrder(t, req)
			hash := store.HashToken(tok.Token)
			if !outcomeKept {
				if _, err := e.db.ExecContext(t.Context(), "DELETE FROM outcomes WHERE token_hash = ?", hash); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.db.ExecContext(t.Context(), "INSERT INTO tokens (token_hash, customer_id, issue_time, expire_time) VALUES (?, ?, ?, ?)",
				hash, "alice", t0, t0.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			before := e.snapshot(t)

			out, err := e.s.PlaceOrder(t.Context(), req)
			if outcomeKept {
				if err != nil || !out.Replayed || out.Rejection != nil {
					t.Fatalf("PlaceOrder = %+v, %v; want the first order replayed", out, err)
				}
				if d := cmp.Diff(first, out.Order); d != "" {
					t.Errorf("replayed order mismatch (-want +got):\n%s", d)
				}
			} else if err == nil || errors.Is(err, store.ErrTokenNotFound) || errors.Is(err, store.ErrTokenExpired) {
				t.Errorf("PlaceOrder = %+v, %v; want an error that is not a definitive token answer", out, err)
			}
			if d := cmp.Diff(before, e.snapshot(t)); d != "" {
				t.Errorf("the call changed the database (-want +got):\n%s", d)
			}
		})
	}
}

func TestPlaceOrderStoresOutOfStockRejection(t *testing.T) {
	e := newEnv(t, store.Options{})
	e.put(t, product("A", 100, "EUR", 5), product("B", 200, "EUR", 1))
	tok := e.issue(t, "alice")
	req := store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: []store.Item{{SKU: "A", Quantity: 2}, {SKU: "B", Quantity: 3}}}
	wantMeta := map[string]string{"sku": "B", "requested": "3", "available": "1"}

	out := e.place(t, req)
	if out.Order != nil || out.Replayed || !errors.Is(out.Rejection, store.ErrOutOfStock) {
		t.Fatalf("PlaceOrder = %+v, want a new out-of-stock rejection", out)
	}
	if d := cmp.Diff(wantMeta, metadata(t, out.Rejection)); d != "" {
		t.Errorf("rejection metadata mismatch (-want +got):\n%s", d)
	}
	if n := e.tokenRows(t, tok.Token); n != 0 {
		t.Errorf("token rows = %d, want 0 (consumed)", n)
	}
	if n := e.count(t, "outcomes", "token_hash = ? AND order_id IS NULL AND rejection = 'out_of_stock'", store.HashToken(tok.Token)); n != 1 {
		t.Errorf("out_of_stock outcome rows = %d, want 1", n)
	}
	if n := e.count(t, "orders", ""); n != 0 {
		t.Errorf("orders rows = %d, want 0", n)
	}
	if n := e.count(t, "order_lines", ""); n != 0 {
		t.Errorf("order_lines rows = %d, want 0", n)
	}
	if a, b := e.stock(t, "A"), e.stock(t, "B"); a != 5 || b != 1 {
		t.Errorf("stock A, B = %d, %d; want 5, 1 (nothing reserved)", a, b)
	}

	t.Run("replayed after restocking", func(t *testing.T) {
		e.put(t, product("B", 200, "EUR", 100))
		e.clock.Advance(time.Minute)
		for _, items := range [][]store.Item{req.Items, {req.Items[1], req.Items[0]}} {
			out := e.place(t, store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: items})
			if out.Order != nil || !out.Replayed || !errors.Is(out.Rejection, store.ErrOutOfStock) {
				t.Fatalf("retry with %v = %+v, want a replayed out-of-stock rejection", items, out)
			}
			if d := cmp.Diff(wantMeta, metadata(t, out.Rejection)); d != "" {
				t.Errorf("replayed metadata mismatch (-want +got):\n%s", d)
			}
		}
		if n := e.count(t, "orders", ""); n != 0 {
			t.Errorf("orders rows = %d, want 0", n)
		}
		if a, b := e.stock(t, "A"), e.stock(t, "B"); a != 5 || b != 100 {
			t.Errorf("stock A, B = %d, %d; want 5, 100", a, b)
		}
	})
}

func TestPlaceOrderRejectsReusedToken(t *testing.T) {
	first := []store.Item{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 2}}
	tests := []struct {
		name       string
		stockB     int64 // 1: the first call is rejected out of stock
		retryItems []store.Item
	}{
		{"other quantity", 10, []store.Item{{SKU: "A", Quantity: 2}, {SKU: "B", Quantity: 2}}},
		{"extra item", 10, []store.Item{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 2}, {SKU: "C", Quantity: 1}}},
		{"missing item", 10, []store.Item{{SKU: "A", Quantity: 1}}},
		{"other sku", 10, []store.Item{{SKU: "A", Quantity: 1}, {SKU: "C", Quantity: 2}}},
		{"after a stored rejection", 1, []store.Item{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, store.Options{})
			e.put(t, product("A", 100, "EUR", 10), product("B", 200, "EUR", tt.stockB), product("C", 300, "EUR", 10))
			tok := e.issue(t, "alice")
			firstOut := e.place(t, store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: first})
			before := e.snapshot(t)

			_, err := e.s.PlaceOrder(t.Context(), store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: tt.retryItems})
			if !errors.Is(err, store.ErrTokenReused) {
				t.Fatalf("PlaceOrder with other items: error %v, want ErrTokenReused", err)
			}
			if d := cmp.Diff(before, e.snapshot(t)); d != "" {
				t.Errorf("reuse changed the database (-want +got):\n%s", d)
			}
			// The first request still replays its outcome.
			again := e.place(t, store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: first})
			if !again.Replayed || cmp.Diff(firstOut.Order, again.Order) != "" || errors.Is(again.Rejection, store.ErrOutOfStock) != errors.Is(firstOut.Rejection, store.ErrOutOfStock) {
				t.Errorf("replay of the first request = %+v, want the first outcome %+v replayed", again, firstOut)
			}
		})
	}
}

func TestPlaceOrderTokenNotFound(t *testing.T) {
	items := []store.Item{{SKU: "A", Quantity: 1}}
	tests := []struct {
		name string
		// setup returns the token bob tries.
		setup func(testing.TB, *env) string
		// aliceUsed: alice placed with the token before bob tried it.
		issued, aliceUsed bool
	}{
		{
			name:  "never issued",
			setup: func(testing.TB, *env) string { return "otk_never_issued" },
		},
		{
			name:   "another customer's unused token",
			setup:  func(tb testing.TB, e *env) string { return e.issue(tb, "alice").Token },
			issued: true,
		},
		{
			name: "another customer's used token",
			setup: func(tb testing.TB, e *env) string {
				tok := e.issue(tb, "alice").Token
				e.placeOrder(tb, store.PlaceRequest{Token: tok, CustomerID: "alice", Items: items})
				return tok
			},
			issued:    true,
			aliceUsed: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, store.Options{})
			e.put(t, product("A", 100, "EUR", 10))
			token := tt.setup(t, e)
			before := e.snapshot(t)

			out, err := e.s.PlaceOrder(t.Context(), store.PlaceRequest{Token: token, CustomerID: "bob", Items: items})
			if !errors.Is(err, store.ErrTokenNotFound) {
				t.Fatalf("PlaceOrder as bob = %+v, %v; want ErrTokenNotFound", out, err)
			}
			if d := cmp.Diff(before, e.snapshot(t)); d != "" {
				t.Errorf("the call changed the database (-want +got):\n%s", d)
			}
			if !tt.issued {
				return
			}
			// The token is still alice's: unused, she places with it; used,
			// she gets her replay.
			out = e.place(t, store.PlaceRequest{Token: token, CustomerID: "alice", Items: items})
			if out.Order == nil || out.Order.CustomerID != "alice" || out.Replayed != tt.aliceUsed {
				t.Errorf("alice's PlaceOrder afterwards = %+v, want her order with Replayed %v", out, tt.aliceUsed)
			}
			if n := e.count(t, "orders", "customer_id = 'alice'"); n != 1 {
				t.Errorf("alice has %d orders, want 1", n)
			}
		})
	}
}

func TestPlaceOrderTokenExpiry(t *testing.T) {
	const ttl = time.Hour
	tests := []struct {
		name    string
		advance time.Duration
		wantErr error
	}{
		{"usable a microsecond before expiry", ttl - time.Microsecond, nil},
		{"expired at the expiry instant", ttl, store.ErrTokenExpired},
		{"expired past expiry", ttl + time.Minute, store.ErrTokenExpired},
		{"expired long past expiry", 30 * 24 * time.Hour, store.ErrTokenExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, store.Options{TokenTTL: ttl})
			e.put(t, product("A", 100, "EUR", 10))
			tok := e.issue(t, "alice")
			if want := t0.Add(ttl); !tok.ExpireTime.Equal(want) {
				t.Errorf("ExpireTime = %v, want %v", tok.ExpireTime, want)
			}
			e.clock.Advance(tt.advance)
			before := e.snapshot(t)

			out, err := e.s.PlaceOrder(t.Context(), store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: []store.Item{{SKU: "A", Quantity: 1}}})
			if tt.wantErr == nil {
				if err != nil || out.Order == nil || out.Replayed {
					t.Fatalf("PlaceOrder = %+v, %v; want a new order", out, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("PlaceOrder = %+v, %v; want %v", out, err, tt.wantErr)
			}
			if d := cmp.Diff(before, e.snapshot(t)); d != "" {
				t.Errorf("the call changed the database (-want +got):\n%s", d)
			}
			if n := e.tokenRows(t, tok.Token); n != 1 {
				t.Errorf("token rows = %d, want 1 (expired tokens stay until purged)", n)
			}
			if n := e.outcomeRows(t, tok.Token); n != 0 {
				t.Errorf("outcome rows = %d, want 0", n)
			}
		})
	}
}

// TestPlaceOrderRejectsInvalidItems covers the errors that change nothing
// and leave the token usable.
func TestPlaceOrderRejectsInvalidItems(t *testing.T) {
	products := []store.Product{
		product("A", 100, "EUR", 10),
		product("B", 200, "EUR", 10),
		product("U", 300, "USD", 10),
		product("X", 1<<62, "EUR", 10),
		product("Z", 100, "EUR", 0),
	}
	tests := []struct {
		name     string
		items    []store.Item
		wantErr  error
		wantMeta map[string]string
	}{
		{
			name:     "unknown sku",
			items:    []store.Item{{SKU: "A", Quantity: 1}, {SKU: "NOPE", Quantity: 1}},
			wantErr:  store.ErrProductNotFound,
			wantMeta: map[string]string{"sku": "NOPE"},
		},
		{
			name:     "unknown sku with another item out of stock",
			items:    []store.Item{{SKU: "Z", Quantity: 1}, {SKU: "NOPE", Quantity: 1}},
			wantErr:  store.ErrProductNotFound,
			wantMeta: map[string]string{"sku": "NOPE"},
		},
		{
			name:     "currencies differ",
			items:    []store.Item{{SKU: "U", Quantity: 1}, {SKU: "A", Quantity: 1}},
			wantErr:  store.ErrCurrencyMismatch,
			wantMeta: map[string]string{"sku": "U", "currency": "USD", "order_currency": "EUR"},
		},
		{
			name:     "total overflows",
			items:    []store.Item{{SKU: "X", Quantity: 2}, {SKU: "B", Quantity: 1}},
			wantErr:  store.ErrAmountOverflow,
			wantMeta: map[string]string{"sku": "X"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, store.Options{})
			e.put(t, products...)
			tok := e.issue(t, "alice")
			before := e.snapshot(t)

			out, err := e.s.PlaceOrder(t.Context(), store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: tt.items})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("PlaceOrder = %+v, %v; want %v", out, err, tt.wantErr)
			}
			if d := cmp.Diff(tt.wantMeta, metadata(t, err)); d != "" {
				t.Errorf("error metadata mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(before, e.snapshot(t)); d != "" {
				t.Errorf("the call changed the database (-want +got):\n%s", d)
			}
			if n := e.tokenRows(t, tok.Token); n != 1 {
				t.Errorf("token rows = %d, want 1 (untouched)", n)
			}
			if n := e.outcomeRows(t, tok.Token); n != 0 {
				t.Errorf("outcome rows = %d, want 0", n)
			}

			// The token is still good for a valid request.
			order := e.placeOrder(t, store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: []store.Item{{SKU: "A", Quantity: 2}}})
			if order.TotalMinor != 200 {
				t.Errorf("later order total = %d, want 200", order.TotalMinor)
			}
			if got := e.stock(t, "A"); got != 8 {
				t.Errorf("stock of A = %d, want 8", got)
			}
		})
	}
}
