package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/orderd/orderd/client"
	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// call is one PlaceOrder or IssueToken call as the store saw it.
type call struct {
	at time.Time
	// attempt is the x-retry-attempt header of the go-grpc-middleware
	// retry interceptor, "" on a first attempt.
	attempt string
	// previous is the grpc-previous-rpc-attempts header that grpc-go's own
	// retries (service config retryPolicy) send.
	previous string
}

// hook decides the answer of the n-th call (1-based); next is the real
// store.
type hook[T any] func(ctx context.Context, n int, next func(context.Context) (T, error)) (T, error)

// faulty wraps the real store to fail PlaceOrder or IssueToken calls as a
// test wants, and records every such call. Hooks are set before the server
// starts.
type faulty struct {
	server.Store
	place hook[*store.Outcome]
	issue hook[store.IssuedToken]

	mu     sync.Mutex
	places []call
	issues []call
}

func record(ctx context.Context, calls *[]call) int {
	md, _ := metadata.FromIncomingContext(ctx)
	c := call{at: time.Now()}
	if v := md.Get(client.AttemptHeader); len(v) > 0 {
		c.attempt = v[0]
	}
	if v := md.Get("grpc-previous-rpc-attempts"); len(v) > 0 {
		c.previous = v[0]
	}
	*calls = append(*calls, c)
	return len(*calls)
}

func (f *faulty) PlaceOrder(ctx context.Context, req store.PlaceRequest) (*store.Outcome, error) {
	f.mu.Lock()
	n := record(ctx, &f.places)
	f.mu.Unlock()
	next := func(ctx context.Context) (*store.Outcome, error) { return f.Store.PlaceOrder(ctx, req) }
	if f.place == nil {
		return next(ctx)
	}
	return f.place(ctx, n, next)
}

func (f *faulty) IssueToken(ctx context.Context, customerID string) (store.IssuedToken, error) {
	f.mu.Lock()
	n := record(ctx, &f.issues)
	f.mu.Unlock()
	next := func(ctx context.Context) (store.IssuedToken, error) { return f.Store.IssueToken(ctx, customerID) }
	if f.issue == nil {
		return next(ctx)
	}
	return f.issue(ctx, n, next)
}

// placeCalls returns a copy of the PlaceOrder calls so far.
func (f *faulty) placeCalls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.places...)
}

// issueCalls returns a copy of the IssueToken calls so far.
func (f *faulty) issueCalls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.issues...)
}

func attempts(calls []call) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = c.attempt
	}
	return out
}

// env is a real orderd server over a fresh database.
type env struct {
	addr  string
	store *store.Store
	dsn   string
}

// start serves f (wrapping a fresh database's store; f may be nil) through
// the production server on 127.0.0.1:0.
func start(tb testing.TB, f *faulty) *env {
	tb.Helper()
	st, dsn := storetest.New(tb, store.Options{TokenTTL: time.Hour})
	var s server.Store = st
	if f != nil {
		f.Store = st
		s = f
	}
	addr := servertest.Start(tb, s, server.Options{})
	return &env{addr: addr, store: st, dsn: dsn}
}

// dial returns a client of e, closed when the test ends. Unless opts say
// otherwise, backoff is short so that tests do not wait for it; RetryInfo
// delays still apply.
func (e *env) dial(tb testing.TB, opts ...client.Option) *client.Client {
	tb.Helper()
	opts = append([]client.Option{client.WithBackoff(time.Millisecond, 0.2, 10*time.Millisecond)}, opts...)
	c, err := client.Dial(e.addr, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// put stores a product directly in the database.
func (e *env) put(tb testing.TB, sku, currency string, price, stock int64) {
	tb.Helper()
	if _, err := e.store.PutProduct(context.Background(), store.Product{SKU: sku, Name: "product " + sku, UnitPriceMinor: price, Currency: currency, Stock: stock}); err != nil {
		tb.Fatalf("PutProduct(%s): %v", sku, err)
	}
}

// stock returns a product's stock from the database.
func (e *env) stock(tb testing.TB, sku string) int64 {
	tb.Helper()
	p, err := e.store.GetProduct(context.Background(), sku)
	if err != nil {
		tb.Fatalf("GetProduct(%s): %v", sku, err)
	}
	return p.Stock
}

// orders counts a customer's orders in the database.
func (e *env) orders(tb testing.TB, customer string) int {
	tb.Helper()
	var n int
	if err := storetest.DB(tb, e.dsn).QueryRowContext(context.Background(), "SELECT COUNT(*) FROM orders WHERE customer_id = ?", customer).Scan(&n); err != nil {
		tb.Fatalf("count orders: %v", err)
	}
	return n
}
