package store_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

func TestIssueToken(t *testing.T) {
	e := newEnv(t, store.Options{TokenTTL: 15 * time.Minute})
	a, b := e.issue(t, "alice"), e.issue(t, "alice")
	if !strings.HasPrefix(a.Token, "otk_") || a.Token == b.Token {
		t.Errorf("tokens %q, %q: want distinct tokens prefixed otk_", a.Token, b.Token)
	}
	if want := t0.Add(15 * time.Minute); !a.ExpireTime.Equal(want) {
		t.Errorf("ExpireTime = %v, want %v", a.ExpireTime, want)
	}
	if n := e.count(t, "tokens", "customer_id = 'alice'"); n != 2 {
		t.Errorf("token rows = %d, want 2", n)
	}
	if n := e.count(t, "tokens", "token_hash = ? OR token_hash = ?", []byte(a.Token), []byte(b.Token)); n != 0 {
		t.Errorf("%d token rows hold the token itself, want only hashes", n)
	}
}

func TestGetToken(t *testing.T) {
	const ttl = time.Hour
	// Every case issues a token at t0; alice has product A (stock 1).
	placeA := func(tb testing.TB, e *env, token string, qty int64) *store.Outcome {
		return e.place(tb, store.PlaceRequest{Token: token, CustomerID: "alice", Items: []store.Item{{SKU: "A", Quantity: qty}}})
	}
	tests := []struct {
		name string
		// setup acts on alice's token and returns the status GetToken should
		// answer alice (with Rejection compared by errors.Is).
		setup   func(tb testing.TB, e *env, tok store.IssuedToken) store.TokenStatus
		asker   string // who asks; "" means alice
		token   string // token asked about; "" means alice's
		wantErr error
	}{
		{
			name: "issued",
			setup: func(_ testing.TB, e *env, tok store.IssuedToken) store.TokenStatus {
				e.clock.Advance(ttl - time.Microsecond)
				return store.TokenStatus{State: store.TokenIssued, ExpireTime: t0.Add(ttl)}
			},
		},
		{
			name: "expired at the expiry instant",
			setup: func(_ testing.TB, e *env, tok store.IssuedToken) store.TokenStatus {
				e.clock.Advance(ttl)
				return store.TokenStatus{State: store.TokenExpired, ExpireTime: t0.Add(ttl)}
			},
		},
		{
			name: "expired long ago",
			setup: func(_ testing.TB, e *env, tok store.IssuedToken) store.TokenStatus {
				e.clock.Advance(48 * time.Hour)
				return store.TokenStatus{State: store.TokenExpired, ExpireTime: t0.Add(ttl)}
			},
		},
		{
			name: "consumed by an order",
			setup: func(tb testing.TB, e *env, tok store.IssuedToken) store.TokenStatus {
				e.clock.Advance(time.Minute)
				out := placeA(tb, e, tok.Token, 1)
				e.clock.Advance(2 * ttl) // consumed stays consumed past expiry
				return store.TokenStatus{State: store.TokenConsumed, OrderID: out.Order.ID, ConsumeTime: t0.Add(time.Minute)}
			},
		},
		{
			name: "consumed by an out-of-stock rejection",
			setup: func(tb testing.TB, e *env, tok store.IssuedToken) store.TokenStatus {
				e.clock.Advance(time.Minute)
				if out := placeA(tb, e, tok.Token, 2); !errors.Is(out.Rejection, store.ErrOutOfStock) {
					tb.Fatalf("PlaceOrder = %+v, want out of stock", out)
				}
				return store.TokenStatus{State: store.TokenConsumed, Rejection: store.ErrOutOfStock, ConsumeTime: t0.Add(time.Minute)}
			},
		},
		{
			name:    "never issued",
			token:   "otk_never_issued",
			wantErr: store.ErrTokenNotFound,
		},
		{
			name:    "another customer's issued token",
			asker:   "bob",
			wantErr: store.ErrTokenNotFound,
		},
		{
			name: "another customer's consumed token",
			setup: func(tb testing.TB, e *env, tok store.IssuedToken) store.TokenStatus {
				placeA(tb, e, tok.Token, 1)
				return store.TokenStatus{}
			},
			asker:   "bob",
			wantErr: store.ErrTokenNotFound,
		},
		{
			name: "another customer's expired token",
			setup: func(_ testing.TB, e *env, _ store.IssuedToken) store.TokenStatus {
				e.clock.Advance(2 * ttl)
				return store.TokenStatus{}
			},
			asker:   "bob",
			wantErr: store.ErrTokenNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, store.Options{TokenTTL: ttl})
			e.put(t, product("A", 100, "EUR", 1))
			tok := e.issue(t, "alice")
			var want store.TokenStatus
			if tt.setup != nil {
				want = tt.setup(t, e, tok)
			}
			asker, token := "alice", tok.Token
			if tt.asker != "" {
				asker = tt.asker
			}
			if tt.token != "" {
				token = tt.token
			}

			got, err := e.s.GetToken(t.Context(), token, asker)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("GetToken = %+v, %v; want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("GetToken: %v", err)
			}
			if want.Rejection == nil && got.Rejection != nil || want.Rejection != nil && !errors.Is(got.Rejection, want.Rejection) {
				t.Errorf("Rejection = %v, want %v", got.Rejection, want.Rejection)
			}
			want.Rejection, got.Rejection = nil, nil
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("GetToken mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestIssueTokenCapped(t *testing.T) {
	const limit = 3
	e := newEnv(t, store.Options{TokenTTL: time.Hour})
	e.put(t, product("A", 100, "EUR", 10))
	issue := func(customer string) (store.IssuedToken, error) {
		return e.s.IssueTokenCapped(t.Context(), customer, limit)
	}
	var toks []store.IssuedToken
	for i := range limit {
		tok, err := issue("alice")
		if err != nil {
			t.Fatalf("token %d of %d: %v", i+1, limit, err)
		}
		toks = append(toks, tok)
	}

	t.Run("over the cap nothing is issued", func(t *testing.T) {
		before := e.snapshot(t)
		_, err := issue("alice")
		if !errors.Is(err, store.ErrTooManyTokens) {
			t.Fatalf("token %d: %v, want ErrTooManyTokens", limit+1, err)
		}
		if d := cmp.Diff(map[string]string{"max_outstanding": "3"}, metadata(t, err)); d != "" {
			t.Errorf("metadata (-want +got):\n%s", d)
		}
		if d := cmp.Diff(before, e.snapshot(t)); d != "" {
			t.Errorf("a refused IssueToken changed the database (-before +after):\n%s", d)
		}
	})
	t.Run("other customers are not affected", func(t *testing.T) {
		if _, err := issue("bob"); err != nil {
			t.Errorf("bob: %v", err)
		}
	})
	t.Run("using a token frees a place", func(t *testing.T) {
		e.placeOrder(t, store.PlaceRequest{Token: toks[0].Token, CustomerID: "alice", Items: []store.Item{{SKU: "A", Quantity: 1}}})
		if _, err := issue("alice"); err != nil {
			t.Fatalf("after using one: %v", err)
		}
		if _, err := issue("alice"); !errors.Is(err, store.ErrTooManyTokens) {
			t.Errorf("then: %v, want ErrTooManyTokens", err)
		}
	})
	t.Run("expired tokens do not count", func(t *testing.T) {
		e.clock.Advance(time.Hour)
		for i := range limit {
			if _, err := issue("alice"); err != nil {
				t.Fatalf("token %d after expiry: %v", i+1, err)
			}
		}
		if _, err := issue("alice"); !errors.Is(err, store.ErrTooManyTokens) {
			t.Errorf("then: %v, want ErrTooManyTokens", err)
		}
	})
	t.Run("tokens beyond the cap issued before it count", func(t *testing.T) {
		for range 2 * limit {
			e.issue(t, "carol") // no cap
		}
		if _, err := issue("carol"); !errors.Is(err, store.ErrTooManyTokens) {
			t.Errorf("carol with %d tokens: %v, want ErrTooManyTokens", 2*limit, err)
		}
	})
	t.Run("zero means no cap", func(t *testing.T) {
		for i := range 2 * limit {
			if _, err := e.s.IssueTokenCapped(t.Context(), "alice", 0); err != nil {
				t.Fatalf("uncapped token %d: %v", i+1, err)
			}
		}
	})
}

// TestIssueTokenCappedConcurrently shows the documented bound: n calls at
// once for one customer leave at most cap+n-1 tokens, every success has its
// row, and once the cap is reached later calls fail.
func TestIssueTokenCappedConcurrently(t *testing.T) {
	const limit, n = 5, 40
	e := newEnv(t, store.Options{TokenTTL: time.Hour})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			_, err := e.s.IssueTokenCapped(t.Context(), "alice", limit)
			switch {
			case err == nil:
				mu.Lock()
				ok++
				mu.Unlock()
			case !errors.Is(err, store.ErrTooManyTokens):
				t.Errorf("IssueTokenCapped: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	rows := e.count(t, "tokens", "customer_id = 'alice'")
	if rows != ok || rows < limit || rows > limit+n-1 {
		t.Errorf("%d calls issued %d tokens, %d rows; want rows = issued, between %d and %d", n, ok, rows, limit, limit+n-1)
	}
	t.Logf("%d concurrent calls with cap %d issued %d tokens (overshoot %d)", n, limit, ok, ok-limit)
	if _, err := e.s.IssueTokenCapped(t.Context(), "alice", limit); !errors.Is(err, store.ErrTooManyTokens) {
		t.Errorf("after the burst: %v, want ErrTooManyTokens", err)
	}
}

func TestPageTokenKey(t *testing.T) {
	e := newEnv(t, store.Options{})
	dsn := storetest.NewDatabase(t)
	replicas := []*store.Store{openStore(t, dsn), openStore(t, dsn), openStore(t, dsn)}
	if _, err := replicas[0].Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Replicas starting together all create a key; all must end up with
	// the same one.
	keys := make([][]byte, len(replicas))
	var wg sync.WaitGroup
	for i, r := range replicas {
		wg.Go(func() {
			var err error
			if keys[i], err = r.PageTokenKey(t.Context()); err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i, k := range keys {
		if len(k) != 32 || string(k) != string(keys[0]) {
			t.Errorf("replica %d key %x, replica 0 key %x: want the same 32 bytes", i, k, keys[0])
		}
	}
	again, err := replicas[1].PageTokenKey(t.Context())
	if err != nil || string(again) != string(keys[0]) {
		t.Errorf("second read = %x, %v; want the stored key", again, err)
	}
	other, err := e.s.PageTokenKey(t.Context())
	if err != nil || string(other) == string(keys[0]) {
		t.Errorf("another database's key = %x, %v; want a different key", other, err)
	}
}
