package store_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/orderd/orderd/store"
)

func TestPurge(t *testing.T) {
	const ttl = time.Hour
	tokensBefore, outcomesBefore := t0.Add(2*ttl), t0.Add(ttl)
	for _, batch := range []int{1, 3, 7, 100} {
		t.Run("batch "+strconv.Itoa(batch), func(t *testing.T) {
			e := newEnv(t, store.Options{TokenTTL: ttl})
			e.put(t, product("A", 100, "EUR", 100), product("Z", 100, "EUR", 0))
			items := []store.Item{{SKU: "A", Quantity: 1}}

			// At t0: 7 tokens left unused (they expire at t0+1h) and 3
			// outcomes: two orders and an out-of-stock rejection.
			for range 7 {
				e.issue(t, "alice")
			}
			var oldTokens []string
			for _, sku := range []string{"A", "A", "Z"} {
				tok := e.issue(t, "alice").Token
				e.place(t, store.PlaceRequest{Token: tok, CustomerID: "alice", Items: []store.Item{{SKU: sku, Quantity: 1}}})
				oldTokens = append(oldTokens, tok)
			}
			// At t0+1h: a token expiring exactly at the token cutoff.
			e.clock.Advance(ttl)
			boundary := e.issue(t, "alice").Token
			// At t0+2h: two fresh tokens and a fresh outcome.
			e.clock.Advance(ttl)
			fresh := []string{e.issue(t, "alice").Token, e.issue(t, "bob").Token}
			recent := e.issue(t, "alice").Token
			e.placeOrder(t, store.PlaceRequest{Token: recent, CustomerID: "alice", Items: items})
			before := e.snapshot(t)

			got, err := e.s.Purge(t.Context(), tokensBefore, outcomesBefore, batch)
			if err != nil {
				t.Fatalf("Purge: %v", err)
			}
			if d := cmp.Diff(store.PurgeResult{Tokens: 7, Outcomes: 3}, got); d != "" {
				t.Errorf("Purge result mismatch (-want +got):\n%s", d)
			}
			want := before
			want["rows tokens"] -= 7
			want["rows outcomes"] -= 3
			if d := cmp.Diff(want, e.snapshot(t)); d != "" {
				t.Errorf("database after Purge mismatch (-want +got):\n%s", d)
			}
			for _, tok := range append([]string{boundary}, fresh...) {
				if n := e.tokenRows(t, tok); n != 1 {
					t.Errorf("token expiring at or after the cutoff: %d rows, want 1", n)
				}
			}
			if n := e.outcomeRows(t, recent); n != 1 {
				t.Errorf("recent outcome: %d rows, want 1", n)
			}

			t.Run("a second run finds nothing", func(t *testing.T) {
				got, err := e.s.Purge(t.Context(), tokensBefore, outcomesBefore, batch)
				if err != nil || got != (store.PurgeResult{}) {
					t.Errorf("second Purge = %+v, %v; want zero counts", got, err)
				}
			})
			t.Run("purged outcomes read as unknown tokens and place nothing", func(t *testing.T) {
				before := e.snapshot(t)
				for _, tok := range oldTokens {
					if st, err := e.s.GetToken(t.Context(), tok, "alice"); !errors.Is(err, store.ErrTokenNotFound) {
						t.Errorf("GetToken of a purged outcome = %+v, %v; want ErrTokenNotFound", st, err)
					}
					if out, err := e.s.PlaceOrder(t.Context(), store.PlaceRequest{Token: tok, CustomerID: "alice", Items: items}); !errors.Is(err, store.ErrTokenNotFound) {
						t.Errorf("PlaceOrder with a purged outcome's token = %+v, %v; want ErrTokenNotFound", out, err)
					}
				}
				if d := cmp.Diff(before, e.snapshot(t)); d != "" {
					t.Errorf("the calls changed the database (-want +got):\n%s", d)
				}
			})
			t.Run("kept tokens still answer", func(t *testing.T) {
				if st, err := e.s.GetToken(t.Context(), fresh[0], "alice"); err != nil || st.State != store.TokenIssued {
					t.Errorf("GetToken(fresh) = %+v, %v; want issued", st, err)
				}
				if st, err := e.s.GetToken(t.Context(), recent, "alice"); err != nil || st.State != store.TokenConsumed {
					t.Errorf("GetToken(recent) = %+v, %v; want consumed", st, err)
				}
			})
		})
	}
}
