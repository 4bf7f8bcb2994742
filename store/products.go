package store

import (
	"context"
	"fmt"
)

const upsertProduct = `
INSERT INTO products (sku, name, unit_price_minor, currency, stock, update_time) VALUES (?, ?, ?, ?, ?, ?)
ON DUPLICATE KEY UPDATE name = VALUES(name), unit_price_minor = VALUES(unit_price_minor),
  currency = VALUES(currency), stock = VALUES(stock), update_time = VALUES(update_time)`

// PutProduct creates or replaces a product. Orders already placed keep the
// prices they were placed at.
func (s *Store) PutProduct(ctx context.Context, p Product) (Product, error) {
	if _, err := s.db.ExecContext(ctx, upsertProduct, p.SKU, p.Name, p.UnitPriceMinor, p.Currency, p.Stock, s.opts.Now().UTC()); err != nil {
		return Product{}, fmt.Errorf("put product: %w", classify(ctx, err))
	}
	return p, nil
}

const getProduct = `SELECT sku, name, unit_price_minor, currency, stock FROM products WHERE sku = ?`

// GetProduct returns a product. It returns ErrProductNotFound (which matches
// ErrNotFound) when there is none.
func (s *Store) GetProduct(ctx context.Context, sku string) (Product, error) {
	var p Product
	err := s.db.QueryRowContext(ctx, getProduct, sku).Scan(&p.SKU, &p.Name, &p.UnitPriceMinor, &p.Currency, &p.Stock)
	if errNoRows(err) {
		return Product{}, ErrProductNotFound
	}
	if err != nil {
		return Product{}, fmt.Errorf("get product: %w", classify(ctx, err))
	}
	return p, nil
}
