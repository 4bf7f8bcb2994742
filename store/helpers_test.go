package store_test

import (
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// t0 is where every test clock starts: a fixed instant with microseconds,
// the precision the database keeps, so that times round-trip exactly.
var t0 = time.Date(2031, time.March, 14, 15, 9, 26, 535897000, time.UTC)

// env is a store on a fresh database, its clock, and a plain connection
// pool on the same database for direct checks.
type env struct {
	s     *store.Store
	db    *sql.DB
	clock *storetest.Clock
	opts  store.Options
}

// newEnv opens a store on a fresh migrated database. opts.Now is replaced
// by a test clock starting at t0; the zero TokenTTL becomes one hour.
func newEnv(tb testing.TB, opts store.Options) *env {
	tb.Helper()
	c := storetest.NewClock(t0)
	opts.Now = c.Now
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	s, dsn := storetest.New(tb, opts)
	return &env{s: s, db: storetest.DB(tb, dsn), clock: c, opts: opts}
}

// issue issues a token to customer.
func (e *env) issue(tb testing.TB, customer string) store.IssuedToken {
	tb.Helper()
	tok, err := e.s.IssueToken(tb.Context(), customer)
	if err != nil {
		tb.Fatalf("IssueToken(%q): %v", customer, err)
	}
	return tok
}

// put creates or replaces products.
func (e *env) put(tb testing.TB, ps ...store.Product) {
	tb.Helper()
	for _, p := range ps {
		if _, err := e.s.PutProduct(tb.Context(), p); err != nil {
			tb.Fatalf("PutProduct(%+v): %v", p, err)
		}
	}
}

// place places an order and fails the test on error.
func (e *env) place(tb testing.TB, req store.PlaceRequest) *store.Outcome {
	tb.Helper()
	out, err := e.s.PlaceOrder(tb.Context(), req)
	if err != nil {
		tb.Fatalf("PlaceOrder(%+v): %v", req, err)
	}
	return out
}

// placeOrder places an order that must succeed with a new order.
func (e *env) placeOrder(tb testing.TB, req store.PlaceRequest) *store.Order {
	tb.Helper()
	out := e.place(tb, req)
	if out.Order == nil || out.Rejection != nil || out.Replayed {
		tb.Fatalf("PlaceOrder(%+v) = %+v, want a new order", req, out)
	}
	return out.Order
}

// count counts the rows of table matching where (SQL, "" for all rows).
func (e *env) count(tb testing.TB, table, where string, args ...any) int {
	tb.Helper()
	q := "SELECT COUNT(*) FROM " + table
	if where != "" {
		q += " WHERE " + where
	}
	var n int
	if err := e.db.QueryRowContext(tb.Context(), q, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return n
}

// tokenRows counts the unused token rows of a token (0 or 1).
func (e *env) tokenRows(tb testing.TB, token string) int {
	tb.Helper()
	return e.count(tb, "tokens", "token_hash = ?", store.HashToken(token))
}

// outcomeRows counts the stored outcomes of a token (0 or 1).
func (e *env) outcomeRows(tb testing.TB, token string) int {
	tb.Helper()
	return e.count(tb, "outcomes", "token_hash = ?", store.HashToken(token))
}

// stock reads a product's stock from the products table.
func (e *env) stock(tb testing.TB, sku string) int64 {
	tb.Helper()
	var n int64
	if err := e.db.QueryRowContext(tb.Context(), "SELECT stock FROM products WHERE sku = ?", sku).Scan(&n); err != nil {
		tb.Fatalf("stock of %s: %v", sku, err)
	}
	return n
}

// price reads a product's unit price from the products table.
func (e *env) price(tb testing.TB, sku string) int64 {
	tb.Helper()
	var n int64
	if err := e.db.QueryRowContext(tb.Context(), "SELECT unit_price_minor FROM products WHERE sku = ?", sku).Scan(&n); err != nil {
		tb.Fatalf("price of %s: %v", sku, err)
	}
	return n
}

// snapshot is what a call that "changes nothing" must leave as it was:
// the row count of every table and every product's stock.
func (e *env) snapshot(tb testing.TB) map[string]int64 {
	tb.Helper()
	snap := map[string]int64{}
	for _, table := range []string{"tokens", "orders", "order_lines", "outcomes", "products"} {
		snap["rows "+table] = int64(e.count(tb, table, ""))
	}
	rows, err := e.db.QueryContext(tb.Context(), "SELECT sku, stock FROM products")
	if err != nil {
		tb.Fatalf("read stock: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var sku string
		var n int64
		if err := rows.Scan(&sku, &n); err != nil {
			tb.Fatalf("read stock: %v", err)
		}
		snap["stock "+sku] = n
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("read stock: %v", err)
	}
	return snap
}

// metadata returns the metadata of err's *store.DetailError, failing the
// test when err carries none.
func metadata(tb testing.TB, err error) map[string]string {
	tb.Helper()
	var d *store.DetailError
	if !errors.As(err, &d) {
		tb.Fatalf("error %v (%T) is not a *store.DetailError", err, err)
	}
	return d.Metadata
}

// product is a product with a generated name.
func product(sku string, price int64, currency string, stock int64) store.Product {
	return store.Product{SKU: sku, Name: "Product " + sku, UnitPriceMinor: price, Currency: currency, Stock: stock}
}
