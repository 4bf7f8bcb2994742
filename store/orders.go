package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// claimOutcome inserts the token's outcome row before anything else, with
// an empty body that the same transaction fills in before it commits. The
// row's primary key (the token hash) is the lock that every call with the
// token queues on: InnoDB makes a second INSERT of a key wait for the
// transaction that inserted it, then fail with a duplicate key (1062) if it
// committed, or go on if it rolled back. So a call that gets past the claim
// knows that no other call is placing the token.
//
// The token row is not a reliable lock for this: under load MariaDB 10.11
// was seen to let a duplicate's DELETE and its locking read skip the token
// row that an owner had delete-marked and not yet committed, so the
// duplicate answered TOKEN_NOT_FOUND while the order was being placed
// (docs/BENCHMARKS.md, "storm").
const claimOutcome = `INSERT INTO outcomes (token_hash, customer_id, request_hash, order_id, rejection, body, create_time) VALUES (?, ?, ?, NULL, NULL, '', ?)`

// consumeToken deletes the token row if it belongs to the customer and has
// not expired; it runs after claimOutcome succeeded. One affected row means
// this transaction owns the token; none means it cannot be consumed (gone,
// expired, another customer's), as no other call holds the claim.
//
// The multi-table form exists only for the index hint (MySQL and MariaDB
// allow hints there, not in a single-table DELETE): with few live tokens
// the optimizer was seen to plan a range scan of tokens_expire instead,
// which locks every live token in the range (deadlocks between unrelated
// orders) rather than just this one.
const consumeToken = `DELETE t FROM tokens AS t FORCE INDEX (PRIMARY) WHERE t.token_hash = ? AND t.customer_id = ? AND t.expire_time > ?`

// claimAndConsume is PlaceOrder's first round trip (with START TRANSACTION).
const claimAndConsume = claimOutcome + "; " + consumeToken

// PlaceOrder consumes the request's token and, in the same transaction,
// reserves stock, writes the order and stores the outcome; or, if the token
// was consumed before, returns that first outcome with Replayed set.
//
// A stored rejection (ErrOutOfStock) is an outcome, not an error. Errors:
// ErrInvalidRequest (no items, a quantity below 1, a SKU twice),
// ErrTokenNotFound, ErrTokenExpired, ErrTokenReused (the token placed other
// items), ErrProductNotFound, ErrCurrencyMismatch, ErrAmountOverflow (these
// change nothing); ErrContention after the retry budget; ErrUnavailable
// (if the connection was lost during COMMIT the order may exist: a retry
// replays it); context errors when ctx ends, including while waiting for a
// concurrent call with the same token.
func (s *Store) PlaceOrder(ctx context.Context, req PlaceRequest) (*Outcome, error) {
	if err := req.check(); err != nil {
		return nil, err
	}
	hash := HashToken(req.Token)
	fp := req.fingerprint()
	items := slices.Clone(req.Items)
	// Locks are taken in SKU order so that concurrent orders sharing
	// products queue instead of deadlocking.
	slices.SortFunc(items, func(a, b Item) int { return strings.Compare(a.SKU, b.SKU) })

	var out *Outcome
	err := s.inTx(ctx, func(tx *tx) error {
		now := s.opts.Now().UTC().Truncate(time.Microsecond)
		res, err := tx.ExecContext(ctx, claimAndConsume, hash, req.CustomerID, fp, now, hash, req.CustomerID, now)
		if mysqlErrNumber(err) == erDupEntry {
			// Another call claimed the token and committed (the INSERT
			// waited for it if it was in flight): answer with its outcome.
			// The DELETE did not run.
			var found bool
			out, found, err = readOutcome(ctx, tx, hash, req.CustomerID, fp)
			if err == nil && !found {
				err = fmt.Errorf("claim token: duplicate key but no outcome: %w", ErrContention)
			}
			return err
		}
		if err != nil {
			return fmt.Errorf("claim token: %w", err)
		}
		n, err := res.RowsAffected() // the DELETE's
		if err != nil {
			return fmt.Errorf("consume token: %w", err)
		}
		if n == 1 {
			out, err = execute(ctx, tx, hash, fp, req.CustomerID, items, now)
			return err
		}
		// Returning an error rolls the claim back.
		return whyNotConsumable(ctx, tx, hash, req.CustomerID, now)
	})
	if mysqlErrNumber(err) == erDupEntry {
		// The orders table's UNIQUE token hash caught a second order: the
		// claim succeeded because the token's outcome row was gone while
		// its order stayed (a token row restored after its outcome was
		// purged). The writes were rolled back; answer with the outcome if
		// there is one by now.
		err = s.inTx(ctx, func(tx *tx) error {
			var found bool
			out, found, err = readOutcome(ctx, tx, hash, req.CustomerID, fp)
			if err == nil && !found {
				err = errors.New("the token has an order but no stored outcome")
			}
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

const (
	lockProductsPrefix = `SELECT sku, unit_price_minor, currency, stock FROM products WHERE sku IN (`
	lockProductsSuffix = `) ORDER BY sku FOR UPDATE`
	insertOrder        = `INSERT INTO orders (id, customer_id, token_hash, total_minor, currency, status, create_time) VALUES (?, ?, ?, ?, ?, ?, ?)`
	insertLinesPrefix  = `INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor, line_total_minor) VALUES `
	// fillOutcome completes the row claimOutcome inserted.
	fillOutcome = `UPDATE outcomes SET order_id = ?, rejection = ?, body = ? WHERE token_hash = ?`
)

// execute runs the placement for a token this transaction has consumed.
// items are sorted by SKU.
func execute(ctx context.Context, tx *tx, hash, fp []byte, customerID string, items []Item, now time.Time) (*Outcome, error) {
	args := make([]any, len(items))
	for i, it := range items {
		args[i] = it.SKU
	}
	rows, err := tx.QueryContext(ctx, lockProductsPrefix+placeholders(len(items), "?")+lockProductsSuffix, args...)
	if err != nil {
		return nil, fmt.Errorf("lock products: %w", err)
	}
	products := make(map[string]Product, len(items))
	for rows.Next() {
		var p Product
		if err := rows.Scan(&p.SKU, &p.UnitPriceMinor, &p.Currency, &p.Stock); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan product: %w", err)
		}
		products[p.SKU] = p
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock products: %w", err)
	}

	order := &Order{ID: uuid.Must(uuid.NewV7()).String(), CustomerID: customerID, Status: OrderStatusPlaced, CreateTime: now}
	var short error
	for _, it := range items {
		p, ok := products[it.SKU]
		if !ok {
			return nil, withDetail(ErrProductNotFound, "sku", it.SKU)
		}
		if order.Currency == "" {
			order.Currency = p.Currency
		} else if p.Currency != order.Currency {
			return nil, withDetail(ErrCurrencyMismatch, "sku", it.SKU, "currency", p.Currency, "order_currency", order.Currency)
		}
		hi, lineTotal := bits.Mul64(uint64(it.Quantity), uint64(p.UnitPriceMinor))
		total, carry := bits.Add64(uint64(order.TotalMinor), lineTotal, 0)
		if hi != 0 || carry != 0 || lineTotal > 1<<63-1 || total > 1<<63-1 {
			return nil, withDetail(ErrAmountOverflow, "sku", it.SKU)
		}
		order.TotalMinor = int64(total)
		order.Lines = append(order.Lines, Line{SKU: it.SKU, Quantity: it.Quantity, UnitPriceMinor: p.UnitPriceMinor, LineTotalMinor: int64(lineTotal)})
		if short == nil && p.Stock < it.Quantity {
			short = withDetail(ErrOutOfStock, "sku", it.SKU,
				"requested", strconv.FormatInt(it.Quantity, 10), "available", strconv.FormatInt(p.Stock, 10))
		}
	}

	if short != nil {
		out := &Outcome{Rejection: short}
		if err := storeOutcome(ctx, tx, hash, out); err != nil {
			return nil, err
		}
		return out, nil
	}

	// The rest depends only on what the locking read returned, so it
	// travels as one multi-statement round trip with the COMMIT: one
	// UPDATE for every line's stock (the rows are locked and were checked
	// above), the order, its lines and the outcome. The server stops at the
	// first failing statement and returns its error, so a duplicate key
	// (1062) still reaches the replay path, nothing is committed, and
	// inTx's rollback undoes the statements before it.
	var q strings.Builder
	wargs := make([]any, 0, 9*len(items)+11) // 3 per line in the UPDATE, 6 per line, 7 + 4
	q.WriteString("UPDATE products SET stock = CASE sku")
	for _, it := range items {
		q.WriteString(" WHEN ? THEN stock - ?")
		wargs = append(wargs, it.SKU, it.Quantity)
	}
	q.WriteString(" END WHERE sku IN (" + placeholders(len(items), "?") + ")")
	wargs = append(wargs, args...)
	q.WriteString("; " + insertOrder)
	wargs = append(wargs, order.ID, customerID, hash, order.TotalMinor, order.Currency, order.Status, now)
	q.WriteString("; " + insertLinesPrefix + placeholders(len(order.Lines), "(?, ?, ?, ?, ?, ?)"))
	for i, l := range order.Lines {
		wargs = append(wargs, order.ID, i+1, l.SKU, l.Quantity, l.UnitPriceMinor, l.LineTotalMinor)
	}
	out := &Outcome{Order: order}
	oargs, err := outcomeArgs(hash, out)
	if err != nil {
		return nil, err
	}
	q.WriteString("; " + fillOutcome)
	wargs = append(wargs, oargs...)
	if err := tx.ExecCommit(ctx, q.String(), wargs...); err != nil {
		return nil, fmt.Errorf("write order: %w", err)
	}
	return out, nil
}

// placeholders returns n copies of one joined by commas.
func placeholders(n int, one string) string {
	return strings.TrimSuffix(strings.Repeat(one+", ", n), ", ")
}

// outcomeBody is how an outcome is stored: a snapshot, so that a replay
// answers exactly what the first call answered even after the order or its
// products change.
type outcomeBody struct {
	Order     *Order            `json:"order,omitempty"`
	Rejection string            `json:"rejection,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// storeOutcome records a rejection as the token's outcome and commits.
func storeOutcome(ctx context.Context, tx *tx, hash []byte, out *Outcome) error {
	args, err := outcomeArgs(hash, out)
	if err != nil {
		return err
	}
	if err := tx.ExecCommit(ctx, fillOutcome, args...); err != nil {
		return fmt.Errorf("store outcome: %w", err)
	}
	return nil
}

// outcomeArgs are fillOutcome's arguments for out.
func outcomeArgs(hash []byte, out *Outcome) ([]any, error) {
	body := outcomeBody{Order: out.Order}
	var orderID, rejection sql.NullString
	if out.Order != nil {
		orderID = sql.NullString{String: out.Order.ID, Valid: true}
	} else {
		body.Rejection = rejectionCode(out.Rejection)
		if body.Rejection == "" {
			return nil, fmt.Errorf("store outcome: %v is not a stored rejection", out.Rejection)
		}
		rejection = sql.NullString{String: body.Rejection, Valid: true}
		if d, ok := out.Rejection.(*DetailError); ok {
			body.Metadata = d.Metadata
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode outcome: %w", err)
	}
	return []any{orderID, rejection, b, hash}, nil
}

const (
	selectOutcome = `SELECT customer_id, request_hash, body FROM outcomes WHERE token_hash = ?`
	selectToken   = `SELECT customer_id, expire_time FROM tokens WHERE token_hash = ?`
)

// whyNotConsumable explains why this transaction, holding the token's
// claim, could not consume it: ErrTokenExpired if the customer's token is
// still there but expired, else ErrTokenNotFound (never issued, another
// customer's, or purged). Definitive answers a client will not retry, so
// they rest on the claim: no other call was placing the token meanwhile.
func whyNotConsumable(ctx context.Context, tx *tx, hash []byte, customerID string, now time.Time) error {
	var (
		owner  string
		expire time.Time
	)
	err := tx.scanRow(ctx, selectToken, []any{hash}, &owner, &expire)
	switch {
	case errNoRows(err), err == nil && owner != customerID:
		return ErrTokenNotFound
	case err != nil:
		return fmt.Errorf("read token: %w", err)
	case !now.Before(expire):
		return ErrTokenExpired
	}
	// Live and the customer's, yet the DELETE left it: not expected while
	// this call holds the claim. Let the client retry rather than answer.
	return fmt.Errorf("consume token: a live token was not consumed: %w", ErrContention)
}

// readOutcome reads the stored outcome of a token: found is false when
// there is none; another customer's outcome is ErrTokenNotFound and another
// request's ErrTokenReused.
func readOutcome(ctx context.Context, tx *tx, hash []byte, customerID string, fp []byte) (out *Outcome, found bool, err error) {
	var (
		owner   string
		reqHash []byte
		raw     []byte
	)
	err = tx.scanRow(ctx, selectOutcome, []any{hash}, &owner, &reqHash, &raw)
	switch {
	case errNoRows(err):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("read outcome: %w", err)
	case owner != customerID:
		return nil, true, ErrTokenNotFound
	case !bytes.Equal(reqHash, fp):
		return nil, true, ErrTokenReused
	}
	out, err = decodeOutcome(raw)
	return out, true, err
}

func decodeOutcome(raw []byte) (*Outcome, error) {
	var body outcomeBody
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, fmt.Errorf("decode outcome: %w", err)
	}
	out := &Outcome{Order: body.Order, Replayed: true}
	if body.Order == nil {
		rej, ok := storedRejections[body.Rejection]
		if !ok {
			return nil, fmt.Errorf("decode outcome: unknown rejection %q", body.Rejection)
		}
		out.Rejection = &DetailError{Err: rej, Metadata: body.Metadata}
	}
	return out, nil
}

const selectOrder = `
SELECT o.id, o.customer_id, o.total_minor, o.currency, o.status, o.create_time,
       l.sku, l.quantity, l.unit_price_minor, l.line_total_minor
FROM orders o JOIN order_lines l ON l.order_id = o.id
WHERE o.id = ?
ORDER BY l.line_no`

// GetOrder returns an order with its lines. It returns ErrOrderNotFound
// (which matches ErrNotFound) when there is none.
func (s *Store) GetOrder(ctx context.Context, id string) (*Order, error) {
	orders, err := s.queryOrders(ctx, selectOrder, id)
	if err != nil {
		return nil, fmt.Errorf("get order: %w", err)
	}
	if len(orders) == 0 {
		return nil, ErrOrderNotFound
	}
	return orders[0], nil
}

// Cursor is a position in a customer's orders, newest first: the last order
// of the previous page.
type Cursor struct {
	CreateTime time.Time
	ID         string
}

// The page is cut in a derived table so that the lines come in the same
// round trip. MySQL and MariaDB both allow LIMIT there.
const (
	listOrdersHead = `
SELECT o.id, o.customer_id, o.total_minor, o.currency, o.status, o.create_time,
       l.sku, l.quantity, l.unit_price_minor, l.line_total_minor
FROM (SELECT id, customer_id, total_minor, currency, status, create_time FROM orders
      WHERE customer_id = ?`
	listOrdersAfter = ` AND (create_time < ? OR (create_time = ? AND id < ?))`
	listOrdersTail  = `
      ORDER BY create_time DESC, id DESC LIMIT ?) o
JOIN order_lines l ON l.order_id = o.id
ORDER BY o.create_time DESC, o.id DESC, l.line_no`
)

// ListOrders returns up to pageSize of a customer's orders, newest first,
// after the cursor (nil: from the newest). next is nil on the last page.
// pageSize below 1 is ErrInvalidRequest.
func (s *Store) ListOrders(ctx context.Context, customerID string, pageSize int, after *Cursor) (orders []*Order, next *Cursor, err error) {
	if pageSize < 1 {
		return nil, nil, withDetail(ErrInvalidRequest, "page_size", strconv.Itoa(pageSize))
	}
	q := listOrdersHead
	args := []any{customerID}
	if after != nil {
		q += listOrdersAfter
		args = append(args, after.CreateTime, after.CreateTime, after.ID)
	}
	q += listOrdersTail
	args = append(args, pageSize+1)
	orders, err = s.queryOrders(ctx, q, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("list orders: %w", err)
	}
	if len(orders) > pageSize {
		orders = orders[:pageSize]
		last := orders[pageSize-1]
		next = &Cursor{CreateTime: last.CreateTime, ID: last.ID}
	}
	return orders, next, nil
}

// queryOrders reads rows of order columns joined with line columns, ordered
// so that each order's lines are adjacent.
func (s *Store) queryOrders(ctx context.Context, query string, args ...any) ([]*Order, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, classify(ctx, err)
	}
	defer rows.Close()
	var orders []*Order
	for rows.Next() {
		var o Order
		var l Line
		if err := rows.Scan(&o.ID, &o.CustomerID, &o.TotalMinor, &o.Currency, &o.Status, &o.CreateTime,
			&l.SKU, &l.Quantity, &l.UnitPriceMinor, &l.LineTotalMinor); err != nil {
			return nil, classify(ctx, err)
		}
		if n := len(orders); n == 0 || orders[n-1].ID != o.ID {
			orders = append(orders, &o)
		}
		cur := orders[len(orders)-1]
		cur.Lines = append(cur.Lines, l)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(ctx, err)
	}
	return orders, nil
}
