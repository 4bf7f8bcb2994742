package store_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/orderd/orderd/store"
)

// result is what one concurrent PlaceOrder returned.
type result struct {
	out *store.Outcome
	err error
}

// placeConcurrently runs the requests at once (released together) and
// returns their results in request order.
func placeConcurrently(tb testing.TB, s *store.Store, reqs []store.PlaceRequest) []result {
	tb.Helper()
	results := make([]result, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() {
			<-start
			out, err := s.PlaceOrder(tb.Context(), req)
			results[i] = result{out, err}
		})
	}
	close(start)
	wg.Wait()
	return results
}

func TestPlaceOrderConcurrentRetriesPlaceOnce(t *testing.T) {
	const n = 50
	e := newEnv(t, store.Options{})
	e.put(t, product("A", 100, "EUR", 1000), product("B", 250, "EUR", 1000))
	tok := e.issue(t, "alice")
	reqs := make([]store.PlaceRequest, n)
	for i := range reqs {
		items := []store.Item{{SKU: "A", Quantity: 3}, {SKU: "B", Quantity: 1}}
		if i%2 == 1 {
			items[0], items[1] = items[1], items[0]
		}
		reqs[i] = store.PlaceRequest{Token: tok.Token, CustomerID: "alice", Items: items}
	}

	results := placeConcurrently(t, e.s, reqs)

	var first *store.Order
	replayed := 0
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("call %d: %v", i, r.err)
		}
		if r.out.Order == nil || r.out.Rejection != nil {
			t.Fatalf("call %d: %+v, want an order", i, r.out)
		}
		if r.out.Replayed {
			replayed++
		}
		if first == nil {
			first = r.out.Order
		}
		if d := cmp.Diff(first, r.out.Order); d != "" {
			t.Errorf("call %d: order differs from call 0 (-call0 +got):\n%s", i, d)
		}
	}
	if replayed != n-1 {
		t.Errorf("%d calls replayed, want %d", replayed, n-1)
	}
	if first.TotalMinor != 3*100+250 {
		t.Errorf("order total = %d, want %d", first.TotalMinor, 3*100+250)
	}
	if got := e.count(t, "orders", ""); got != 1 {
		t.Errorf("orders rows = %d, want 1", got)
	}
	if got := e.count(t, "outcomes", ""); got != 1 {
		t.Errorf("outcomes rows = %d, want 1", got)
	}
	if a, b := e.stock(t, "A"), e.stock(t, "B"); a != 997 || b != 999 {
		t.Errorf("stock A, B = %d, %d; want 997, 999 (reserved once)", a, b)
	}
}

func TestPlaceOrderConcurrentTokensShareScarceStock(t *testing.T) {
	const (
		n     = 50
		stock = 30
	)
	e := newEnv(t, store.Options{})
	e.put(t, product("A", 100, "EUR", stock))
	reqs := make([]store.PlaceRequest, n)
	for i := range reqs {
		customer := fmt.Sprintf("c%02d", i)
		reqs[i] = store.PlaceRequest{Token: e.issue(t, customer).Token, CustomerID: customer, Items: []store.Item{{SKU: "A", Quantity: 1}}}
	}

	results := placeConcurrently(t, e.s, reqs)

	placed, rejected := 0, 0
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("call %d: %v", i, r.err)
		case r.out.Replayed:
			t.Errorf("call %d: Replayed with a fresh token", i)
		case r.out.Order != nil:
			placed++
		case errors.Is(r.out.Rejection, store.ErrOutOfStock):
			rejected++
			if d := cmp.Diff(map[string]string{"sku": "A", "requested": "1", "available": "0"}, metadata(t, r.out.Rejection)); d != "" {
				t.Errorf("call %d: rejection metadata mismatch (-want +got):\n%s", i, d)
			}
		default:
			t.Errorf("call %d: unexpected outcome %+v", i, r.out)
		}
	}
	if placed != stock || rejected != n-stock {
		t.Errorf("placed %d, rejected %d; want %d, %d", placed, rejected, stock, n-stock)
	}
	if got := e.stock(t, "A"); got != 0 {
		t.Errorf("final stock = %d, want 0", got)
	}
	if got := e.count(t, "orders", ""); got != stock {
		t.Errorf("orders rows = %d, want %d", got, stock)
	}
	if got := e.count(t, "outcomes", "rejection = 'out_of_stock'"); got != n-stock {
		t.Errorf("out_of_stock outcome rows = %d, want %d", got, n-stock)
	}
	if got := e.count(t, "tokens", ""); got != 0 {
		t.Errorf("token rows = %d, want 0 (all consumed)", got)
	}
}

// TestPlaceOrderOverlappingSKUsConserveStock runs many orders on shared
// products, each naming its lines in a random order, and checks that each
// ends placed or out of stock and that no unit of stock is lost or made up.
func TestPlaceOrderOverlappingSKUsConserveStock(t *testing.T) {
	const (
		n       = 40
		initial = 25
	)
	skus := []string{"P1", "P2", "P3", "P4", "P5"}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	var retries atomic.Int64
	e := newEnv(t, store.Options{OnRetry: func(string) { retries.Add(1) }})
	for i, sku := range skus {
		e.put(t, product(sku, int64(100*(i+1)), "EUR", initial))
	}
	reqs := make([]store.PlaceRequest, n)
	for i := range reqs {
		customer := fmt.Sprintf("c%02d", i)
		pick := rng.Perm(len(skus))[:2+rng.IntN(2)] // 2 or 3 distinct SKUs, random order
		var items []store.Item
		for _, k := range pick {
			items = append(items, store.Item{SKU: skus[k], Quantity: 1 + rng.Int64N(3)})
		}
		reqs[i] = store.PlaceRequest{Token: e.issue(t, customer).Token, CustomerID: customer, Items: items}
	}

	results := placeConcurrently(t, e.s, reqs)

	placedQty := map[string]int64{}
	for _, sku := range skus {
		placedQty[sku] = 0
	}
	placed, rejected, contended := 0, 0, 0
	for i, r := range results {
		req := reqs[i]
		switch {
		case errors.Is(r.err, store.ErrContention):
			contended++
			if n := e.tokenRows(t, req.Token); n != 1 {
				t.Errorf("call %d: contention but token rows = %d, want 1", i, n)
			}
			if n := e.outcomeRows(t, req.Token); n != 0 {
				t.Errorf("call %d: contention but outcome rows = %d, want 0", i, n)
			}
		case r.err != nil:
			t.Errorf("call %d (%v): %v", i, req.Items, r.err)
		case r.out.Replayed:
			t.Errorf("call %d: Replayed with a fresh token", i)
		case r.out.Order != nil:
			placed++
			want := slices.Clone(req.Items)
			slices.SortFunc(want, func(a, b store.Item) int { return strings.Compare(a.SKU, b.SKU) })
			var got []store.Item
			for _, l := range r.out.Order.Lines {
				got = append(got, store.Item{SKU: l.SKU, Quantity: l.Quantity})
				placedQty[l.SKU] += l.Quantity
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("call %d: order lines mismatch (-want +got):\n%s", i, d)
			}
		case errors.Is(r.out.Rejection, store.ErrOutOfStock):
			rejected++
			md := metadata(t, r.out.Rejection)
			if !slices.ContainsFunc(req.Items, func(it store.Item) bool { return it.SKU == md["sku"] && fmt.Sprint(it.Quantity) == md["requested"] }) {
				t.Errorf("call %d: rejection metadata %v names no item of %v", i, md, req.Items)
			}
		default:
			t.Errorf("call %d: unexpected outcome %+v", i, r.out)
		}
	}
	t.Logf("placed %d, out of stock %d, contention %d, transaction retries %d", placed, rejected, contended, retries.Load())
	if placed+rejected+contended != n {
		t.Errorf("placed %d + out of stock %d + contention %d != %d calls", placed, rejected, contended, n)
	}

	wantStock, gotStock, dbQty := map[string]int64{}, map[string]int64{}, map[string]int64{}
	for _, sku := range skus {
		wantStock[sku] = initial - placedQty[sku]
		gotStock[sku] = e.stock(t, sku)
		var q int64
		if err := e.db.QueryRowContext(t.Context(), "SELECT COALESCE(SUM(quantity), 0) FROM order_lines WHERE sku = ?", sku).Scan(&q); err != nil {
			t.Fatalf("sum order_lines: %v", err)
		}
		dbQty[sku] = q
	}
	if d := cmp.Diff(wantStock, gotStock); d != "" {
		t.Errorf("stock not conserved: initial - placed != final (-want +got):\n%s", d)
	}
	if d := cmp.Diff(placedQty, dbQty); d != "" {
		t.Errorf("order_lines quantities differ from the placed orders (-want +got):\n%s", d)
	}
	if got := e.count(t, "orders", ""); got != placed {
		t.Errorf("orders rows = %d, want %d", got, placed)
	}
	if got := e.count(t, "outcomes", ""); got != placed+rejected {
		t.Errorf("outcomes rows = %d, want %d", got, placed+rejected)
	}
}
