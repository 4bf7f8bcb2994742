package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/orderd/orderd/store"
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
