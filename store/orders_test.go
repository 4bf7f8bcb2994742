package store_test

import (
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/orderd/orderd/store"
)

func TestGetOrder(t *testing.T) {
	e := newEnv(t, store.Options{})
	e.put(t, product("A", 100, "EUR", 10), product("B", 7, "EUR", 10))
	placed := e.placeOrder(t, store.PlaceRequest{Token: e.issue(t, "alice").Token, CustomerID: "alice", Items: []store.Item{{SKU: "B", Quantity: 3}, {SKU: "A", Quantity: 1}}})

	t.Run("returns a placed order with its lines", func(t *testing.T) {
		got, err := e.s.GetOrder(t.Context(), placed.ID)
		if err != nil {
			t.Fatalf("GetOrder: %v", err)
		}
		if d := cmp.Diff(placed, got); d != "" {
			t.Errorf("GetOrder mismatch (-want +got):\n%s", d)
		}
	})
	unknown := []struct{ name, id string }{
		{"unknown id", uuid.Must(uuid.NewV7()).String()},
		{"empty id", ""},
		{"malformed id", "not-an-id"},
	}
	for _, tt := range unknown {
		t.Run(tt.name+" is not found", func(t *testing.T) {
			got, err := e.s.GetOrder(t.Context(), tt.id)
			if !errors.Is(err, store.ErrOrderNotFound) || !errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetOrder(%q) = %+v, %v; want ErrOrderNotFound (matching ErrNotFound)", tt.id, got, err)
			}
		})
	}
}

func TestListOrders(t *testing.T) {
	timings := []struct {
		name string
		step time.Duration // clock advance between orders
	}{
		{"distinct create times", time.Second},
		{"equal create times", 0}, // ties break on the (time-ordered) ID
	}
	pagings := []struct {
		pageSize  int
		wantSizes []int
	}{
		{3, []int{3, 3, 1}},
		{1, []int{1, 1, 1, 1, 1, 1, 1}},
		{7, []int{7}},
		{6, []int{6, 1}},
		{100, []int{7}},
	}
	for _, timing := range timings {
		t.Run(timing.name, func(t *testing.T) {
			e := newEnv(t, store.Options{})
			e.put(t, product("A", 100, "EUR", 1000), product("B", 250, "EUR", 1000))
			// alice places 7 orders and bob 2, interleaved.
			var alice, bob []*store.Order
			for i, customer := range []string{"alice", "alice", "bob", "alice", "alice", "alice", "bob", "alice", "alice"} {
				items := []store.Item{{SKU: "A", Quantity: int64(i + 1)}}
				if i%2 == 0 {
					items = append(items, store.Item{SKU: "B", Quantity: 1})
				}
				o := e.placeOrder(t, store.PlaceRequest{Token: e.issue(t, customer).Token, CustomerID: customer, Items: items})
				if customer == "alice" {
					alice = append(alice, o)
				} else {
					bob = append(bob, o)
				}
				e.clock.Advance(timing.step)
			}
			slices.Reverse(alice) // newest first
			slices.Reverse(bob)

			for _, p := range pagings {
				t.Run("page size "+strconv.Itoa(p.pageSize), func(t *testing.T) {
					pages := listAll(t, e.s, "alice", p.pageSize)
					var sizes []int
					var got []*store.Order
					for _, pg := range pages {
						sizes = append(sizes, len(pg))
						got = append(got, pg...)
					}
					if d := cmp.Diff(p.wantSizes, sizes); d != "" {
						t.Errorf("page sizes mismatch (-want +got):\n%s", d)
					}
					if d := cmp.Diff(alice, got); d != "" {
						t.Errorf("alice's orders across pages mismatch (-want +got):\n%s", d)
					}
				})
			}
			t.Run("other customer sees only theirs", func(t *testing.T) {
				got, next, err := e.s.ListOrders(t.Context(), "bob", 10, nil)
				if err != nil {
					t.Fatalf("ListOrders: %v", err)
				}
				if d := cmp.Diff(bob, got); d != "" {
					t.Errorf("bob's orders mismatch (-want +got):\n%s", d)
				}
				if next != nil {
					t.Errorf("next = %+v, want nil", next)
				}
			})
			t.Run("customer without orders", func(t *testing.T) {
				got, next, err := e.s.ListOrders(t.Context(), "carol", 3, nil)
				if err != nil || len(got) != 0 || next != nil {
					t.Errorf("ListOrders(carol) = %d orders, next %+v, %v; want none, nil, nil", len(got), next, err)
				}
			})
		})
	}
}

// listAll pages through a customer's orders, checking each cursor, and
// returns the pages.
func listAll(tb testing.TB, s *store.Store, customer string, pageSize int) [][]*store.Order {
	tb.Helper()
	var pages [][]*store.Order
	var cursor *store.Cursor
	for range 50 {
		page, next, err := s.ListOrders(tb.Context(), customer, pageSize, cursor)
		if err != nil {
			tb.Fatalf("ListOrders(%q, %d, %+v): %v", customer, pageSize, cursor, err)
		}
		pages = append(pages, page)
		if next == nil {
			return pages
		}
		if len(page) != pageSize {
			tb.Fatalf("page %d has %d orders and a next cursor, want %d", len(pages), len(page), pageSize)
		}
		last := page[len(page)-1]
		if d := cmp.Diff(&store.Cursor{CreateTime: last.CreateTime, ID: last.ID}, next); d != "" {
			tb.Fatalf("page %d: next cursor is not its last order (-want +got):\n%s", len(pages), d)
		}
		cursor = next
	}
	tb.Fatalf("ListOrders(%q, %d) still has a next cursor after 50 pages", customer, pageSize)
	return nil
}
