package store_test

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderd/orderd/store"
)

// TestPlaceOrderStorms sends every token from 8 callers at once, 16 tokens
// at a time, for ORDERD_STORM_SOAK (default 2s): every call must get the
// one order, exactly one of them not as a replay. Under this load MariaDB
// was seen to let a duplicate skip the token row an owner had deleted and
// not committed (about once per 8,000 tokens), which answered
// TOKEN_NOT_FOUND for a token being placed; the outcome claim closes that.
func TestPlaceOrderStorms(t *testing.T) {
	soak := 2 * time.Second
	if v := os.Getenv("ORDERD_STORM_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("ORDERD_STORM_SOAK: %v", err)
		}
		soak = d
	}
	e := newEnv(t, store.Options{})
	var skus []string
	for i := range 50 {
		skus = append(skus, fmt.Sprintf("P%02d", i))
		e.put(t, product(skus[i], 100, "EUR", 1_000_000))
	}
	var tokens, bad atomic.Int64
	deadline := time.Now().Add(soak)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			cust := fmt.Sprintf("c%d", g)
			for i := 0; time.Now().Before(deadline) && bad.Load() < 10; i++ {
				tok := e.issue(t, cust)
				items := []store.Item{{SKU: skus[(g*7+i)%50], Quantity: 1}, {SKU: skus[(g*7+i+1)%50], Quantity: 1}}
				reqs := make([]store.PlaceRequest, 8)
				for k := range reqs {
					reqs[k] = store.PlaceRequest{Token: tok.Token, CustomerID: cust, Items: items}
				}
				placed, ids := 0, map[string]bool{}
				for _, r := range placeConcurrently(t, e.s, reqs) {
					if r.err != nil || r.out.Order == nil {
						bad.Add(1)
						t.Errorf("token %d of %s: %+v, %v; want the order", i, cust, r.out, r.err)
						continue
					}
					ids[r.out.Order.ID] = true
					if !r.out.Replayed {
						placed++
					}
				}
				if placed != 1 || len(ids) != 1 {
					bad.Add(1)
					t.Errorf("token %d of %s: %d calls placed, %d distinct orders; want 1 and 1", i, cust, placed, len(ids))
				}
				tokens.Add(1)
			}
		})
	}
	wg.Wait()
	if n := e.count(t, "orders", ""); int64(n) != tokens.Load() {
		t.Errorf("%d orders for %d tokens", n, tokens.Load())
	}
	t.Logf("%d tokens, 8 callers each", tokens.Load())
}
