package store

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"
	"time"
)

// OrderStatus is an order's lifecycle state.
type OrderStatus int8

// Order statuses, as stored.
const (
	OrderStatusUnspecified OrderStatus = 0
	OrderStatusPlaced      OrderStatus = 1
)

// Order is a placed order. Amounts are minor units of Currency.
type Order struct {
	ID         string      `json:"id"`
	CustomerID string      `json:"customer_id"`
	Lines      []Line      `json:"lines"`
	TotalMinor int64       `json:"total_minor"`
	Currency   string      `json:"currency"`
	Status     OrderStatus `json:"status"`
	CreateTime time.Time   `json:"create_time"`
}

// Line is one product of an order, priced when the order was placed.
type Line struct {
	SKU            string `json:"sku"`
	Quantity       int64  `json:"quantity"`
	UnitPriceMinor int64  `json:"unit_price_minor"`
	LineTotalMinor int64  `json:"line_total_minor"`
}

// Product is something that can be ordered.
type Product struct {
	SKU            string
	Name           string
	UnitPriceMinor int64
	Currency       string
	Stock          int64
}

// Item is one product and quantity a caller asks for.
type Item struct {
	SKU      string
	Quantity int64
}

// PlaceRequest asks to place an order with a token.
type PlaceRequest struct {
	Token      string
	CustomerID string
	Items      []Item
}

// check rejects requests the SQL below cannot handle correctly: the stock
// check reads each SKU once, so a SKU twice would oversell.
func (r PlaceRequest) check() error {
	if len(r.Items) == 0 {
		return withDetail(ErrInvalidRequest, "field", "items")
	}
	seen := make(map[string]bool, len(r.Items))
	for _, it := range r.Items {
		if it.Quantity < 1 {
			return withDetail(ErrInvalidRequest, "field", "quantity", "sku", it.SKU)
		}
		if seen[it.SKU] {
			return withDetail(ErrInvalidRequest, "field", "sku", "sku", it.SKU)
		}
		seen[it.SKU] = true
	}
	return nil
}

// fingerprint is the SHA-256 of the request's identity: customer and items
// sorted by SKU (so the order of lines does not matter). The token is not
// part of it: it is the key the fingerprint is stored under.
func (r PlaceRequest) fingerprint() []byte {
	items := slices.Clone(r.Items)
	slices.SortFunc(items, func(a, b Item) int { return strings.Compare(a.SKU, b.SKU) })
	h := sha256.New()
	var n [8]byte
	writeString := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	writeString(r.CustomerID)
	for _, it := range items {
		writeString(it.SKU)
		binary.BigEndian.PutUint64(n[:], uint64(it.Quantity))
		h.Write(n[:])
	}
	return h.Sum(nil)
}

// Outcome is the first outcome of a token, as PlaceOrder returns it.
// Exactly one of Order and Rejection is set.
type Outcome struct {
	// Order is the placed order.
	Order *Order
	// Rejection is the stored rejection (errors.Is ErrOutOfStock), with
	// its metadata as a *DetailError.
	Rejection error
	// Replayed is true when the outcome was recorded by an earlier call.
	Replayed bool
}

// TokenState is what became of a token.
type TokenState int

// Token states.
const (
	TokenIssued TokenState = iota + 1
	TokenExpired
	TokenConsumed
)

// TokenStatus describes a token for GetToken.
type TokenStatus struct {
	State TokenState
	// ExpireTime is set for issued and expired tokens.
	ExpireTime time.Time
	// OrderID is set when the token placed an order.
	OrderID string
	// Rejection is set when the token's outcome is a stored rejection.
	Rejection error
	// ConsumeTime is when the token was consumed.
	ConsumeTime time.Time
}

// IssuedToken is a newly issued token.
type IssuedToken struct {
	Token      string
	ExpireTime time.Time
}
