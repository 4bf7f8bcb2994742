package store_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/orderd/orderd/store"
)

func TestPutAndGetProduct(t *testing.T) {
	e := newEnv(t, store.Options{})
	a := product("A", 1999, "EUR", 4)
	e.put(t, a)

	t.Run("returns what was put", func(t *testing.T) {
		got, err := e.s.GetProduct(t.Context(), "A")
		if err != nil {
			t.Fatalf("GetProduct: %v", err)
		}
		if d := cmp.Diff(a, got); d != "" {
			t.Errorf("GetProduct mismatch (-want +got):\n%s", d)
		}
	})
	t.Run("put replaces every field", func(t *testing.T) {
		b := store.Product{SKU: "A", Name: "Renamed", UnitPriceMinor: 5, Currency: "USD", Stock: 0}
		e.put(t, b)
		got, err := e.s.GetProduct(t.Context(), "A")
		if err != nil {
			t.Fatalf("GetProduct: %v", err)
		}
		if d := cmp.Diff(b, got); d != "" {
			t.Errorf("GetProduct after replace mismatch (-want +got):\n%s", d)
		}
		if n := e.count(t, "products", ""); n != 1 {
			t.Errorf("products rows = %d, want 1", n)
		}
	})
	t.Run("unknown sku is not found", func(t *testing.T) {
		got, err := e.s.GetProduct(t.Context(), "NOPE")
		if !errors.Is(err, store.ErrProductNotFound) || !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetProduct(NOPE) = %+v, %v; want ErrProductNotFound (matching ErrNotFound)", got, err)
		}
	})
	t.Run("negative stock is refused", func(t *testing.T) {
		if _, err := e.s.PutProduct(t.Context(), product("N", 1, "EUR", -1)); err == nil {
			t.Errorf("PutProduct with stock -1 succeeded, want an error (CHECK stock >= 0)")
		}
		if n := e.count(t, "products", "sku = 'N'"); n != 0 {
			t.Errorf("products rows for N = %d, want 0", n)
		}
	})
}
