package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/store"
)

// callTimeout bounds every call of the benchmark; none should come close.
const callTimeout = 30 * time.Second

// mainPhase runs every selected scenario at every concurrency.
func (b *bench) mainPhase(ctx context.Context) error {
	for _, c := range b.cfg.Concurrency {
		byName := map[string]*Result{}
		for _, sc := range allScenarios {
			if !b.cfg.runs(sc) {
				continue
			}
			r, err := b.scenario(ctx, sc, c, byName)
			if err != nil {
				return err
			}
			byName[sc] = r
			b.rep.Results = append(b.rep.Results, r)
		}
		compare(byName[scFlow], byName[scRaw])
		compare(byName[scPlace], byName[scRawPlace])
	}
	return nil
}

// compare sets r's ratios to its SQL floor.
func compare(r, floor *Result) {
	if r == nil || floor == nil {
		return
	}
	r.Floor = floor.Scenario
	if floor.Throughput > 0 {
		r.FloorThroughputRatio = ptr(r.Throughput / floor.Throughput)
	}
	if floor.P99Ms > 0 {
		r.FloorP99Ratio = ptr(r.P99Ms / floor.P99Ms)
	}
}

// scenario runs one scenario at concurrency c; done holds the scenarios
// already run at c, whose rates size the pools of pre-issued tokens.
func (b *bench) scenario(ctx context.Context, sc string, c int, done map[string]*Result) (*Result, error) {
	rateOf := func(names ...string) float64 {
		for _, n := range names {
			if r := done[n]; r != nil && r.Throughput > 0 {
				return r.Throughput
			}
		}
		return 3000
	}
	switch sc {
	case scFlow:
		return b.measure(ctx, sc, c, c, b.flowOp)
	case scRaw:
		return b.measure(ctx, sc, c, c, b.rawOp(b.db))
	case scPlace, scRawPlace:
		// Placing alone is faster than the flow: room for 3x its rate.
		rate := rateOf(scFlow, scRaw)
		if sc == scRawPlace {
			rate = rateOf(scRaw, scFlow)
		}
		pool, err := b.issuePool(ctx, b.poolSize(3*rate, c), func(int, *mrand.Rand) string { return "" })
		if err != nil {
			return nil, err
		}
		fn := b.placeOp(pool)
		if sc == scRawPlace {
			fn = b.rawPlaceOp(b.db, pool)
		}
		r, err := b.measure(ctx, sc, c, c, fn)
		if err != nil {
			return nil, err
		}
		return r, b.dropUnused(ctx, pool)
	case scStorm:
		prefix := "storm-" + b.nonce + "-c" + strconv.Itoa(c) + "-"
		pool, err := b.issuePool(ctx, b.poolSize(1.5*rateOf(scPlace, scFlow), c), func(i int, _ *mrand.Rand) string {
			return prefix + strconv.Itoa(i)
		})
		if err != nil {
			return nil, err
		}
		var settled atomic.Int64
		r, err := b.measure(ctx, sc, c, c*b.cfg.StormCallers, b.stormOp(pool, &settled))
		if err != nil {
			return nil, err
		}
		if err := b.checkStorm(ctx, r, prefix, settled.Load()); err != nil {
			return nil, err
		}
		return r, b.dropUnused(ctx, pool)
	case scNaive:
		prefix := b.nonce + "-c" + strconv.Itoa(c) + "-"
		r, err := b.measure(ctx, sc, c, c*b.cfg.StormCallers, b.naiveOp(prefix))
		if err != nil {
			return nil, err
		}
		return r, b.checkNaive(ctx, r, prefix)
	}
	return nil, errors.New("unknown scenario " + sc)
}

// poolSize is how many tokens to pre-issue for a run at rate orders/s.
func (b *bench) poolSize(rate float64, c int) int {
	n := int(rate*(b.cfg.Warmup+b.cfg.Duration).Seconds()) + 50*c
	return min(max(n, 200), 3_000_000)
}

// customer picks one of 10,000 customers.
func customer(rng *mrand.Rand) string { return "cust-" + strconv.Itoa(rng.IntN(10000)) }

// items picks two distinct products, one unit each, sorted by SKU.
func (b *bench) items(rng *mrand.Rand) (string, string) {
	i := rng.IntN(len(b.skus))
	j := rng.IntN(len(b.skus) - 1)
	if j >= i {
		j++
	}
	x, y := b.skus[i], b.skus[j]
	if y < x {
		x, y = y, x
	}
	return x, y
}

func lineItems(x, y string) []*orderv1.LineItem {
	return []*orderv1.LineItem{{Sku: x, Quantity: 1}, {Sku: y, Quantity: 1}}
}

// newToken makes a token the way orderd does: "otk_" and 192 random bits.
func newToken() string {
	var b [24]byte
	rand.Read(b[:])
	return "otk_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// flowOp is a caller's whole order: IssueToken, then PlaceOrder with it.
func (b *bench) flowOp(ctx context.Context, w *worker) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	cl := b.client(w)
	cust := customer(w.rng)
	tok, err := cl.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: cust})
	if err != nil {
		return err
	}
	resp, err := cl.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: tok.GetToken(), CustomerId: cust, Items: lineItems(b.items(w.rng))})
	if err != nil {
		return err
	}
	if resp.GetReplayed() {
		return benchError("UNEXPECTED_REPLAY")
	}
	return nil
}

// issuePool inserts n tokens straight into orderd's tokens table (orderd
// stores only the SHA-256, as here), valid for an hour. customerOf names a
// token's customer ("" picks a random one).
func (b *bench) issuePool(ctx context.Context, n int, customerOf func(int, *mrand.Rand) string) (*tokenPool, error) {
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7))
	p := &tokenPool{toks: make([]poolToken, n)}
	for i := range p.toks {
		t := newToken()
		cust := customerOf(i, rng)
		if cust == "" {
			cust = customer(rng)
		}
		p.toks[i] = poolToken{token: t, hash: store.HashToken(t), customer: cust}
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	const batch = 1000
	for start := 0; start < n; start += batch {
		part := p.toks[start:min(n, start+batch)]
		args := make([]any, 0, 4*len(part))
		for _, t := range part {
			args = append(args, t.hash, t.customer, now, now.Add(time.Hour))
		}
		q := "INSERT INTO tokens (token_hash, customer_id, issue_time, expire_time) VALUES " + placeholders(len(part), "(?, ?, ?, ?)")
		if _, err := b.db.ExecContext(ctx, q, args...); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// dropUnused deletes the pool's tokens nobody took.
func (b *bench) dropUnused(ctx context.Context, p *tokenPool) error {
	left := p.unused()
	const batch = 1000
	for start := 0; start < len(left); start += batch {
		part := left[start:min(len(left), start+batch)]
		args := make([]any, len(part))
		for i, t := range part {
			args[i] = t.hash
		}
		if _, err := b.db.ExecContext(ctx, "DELETE FROM tokens WHERE token_hash IN ("+placeholders(len(part), "?")+")", args...); err != nil {
			return err
		}
	}
	return nil
}

func placeholders(n int, one string) string {
	return strings.TrimSuffix(strings.Repeat(one+", ", n), ", ")
}

// placeOp is PlaceOrder alone, with a pre-issued token.
func (b *bench) placeOp(p *tokenPool) op {
	return func(ctx context.Context, w *worker) error {
		t, ok := p.take()
		if !ok {
			return errExhausted
		}
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		resp, err := b.client(w).PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: t.token, CustomerId: t.customer, Items: lineItems(b.items(w.rng))})
		if err != nil {
			return err
		}
		if resp.GetReplayed() {
			return benchError("UNEXPECTED_REPLAY")
		}
		return nil
	}
}

// stormOp sends one token's PlaceOrder from StormCallers callers at once
// and checks that they all got the same order, placed by exactly one.
// Each call is a latency sample.
func (b *bench) stormOp(p *tokenPool, settled *atomic.Int64) op {
	return func(ctx context.Context, w *worker) error {
		t, ok := p.take()
		if !ok {
			return errExhausted
		}
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		req := &orderv1.PlaceOrderRequest{Token: t.token, CustomerId: t.customer, Items: lineItems(b.items(w.rng))}
		n := b.cfg.StormCallers
		type answer struct {
			lat  time.Duration
			resp *orderv1.PlaceOrderResponse
			err  error
		}
		answers := make([]answer, n)
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			cl := b.clients[(w.id+i)%len(b.clients)]
			wg.Go(func() {
				<-gate
				t0 := time.Now()
				resp, err := cl.PlaceOrder(ctx, req)
				answers[i] = answer{time.Since(t0), resp, err}
			})
		}
		close(gate)
		wg.Wait()
		ids := map[string]bool{}
		firsts := 0
		var firstErr error
		for _, a := range answers {
			if a.err != nil {
				w.subErr = append(w.subErr, a.err)
				firstErr = cmpOr(firstErr, a.err)
				continue
			}
			w.sub = append(w.sub, a.lat)
			ids[a.resp.GetOrder().GetId()] = true
			if !a.resp.GetReplayed() {
				firsts++
			}
		}
		if len(ids) == 0 {
			return firstErr
		}
		settled.Add(1)
		// The order exists: a definitive rejection of a duplicate (token
		// not found, expired, reused) is a wrong answer; it should have
		// waited and replayed the order.
		for _, a := range answers {
			switch status.Code(a.err) {
			case codes.NotFound, codes.FailedPrecondition, codes.InvalidArgument:
				w.wrong++
			}
		}
		// Two order ids, or two answers that each claim to have placed
		// the order, are duplicates.
		w.dups = max(len(ids), firsts) - 1
		return nil
	}
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// checkStorm counts, in the orders table, the orders of the storm's tokens:
// one per token that got an answer, never two for one token hash.
func (b *bench) checkStorm(ctx context.Context, r *Result, prefix string, settled int64) error {
	var orders, tokens int64
	err := b.db.QueryRowContext(ctx, "SELECT COUNT(*), COUNT(DISTINCT token_hash) FROM orders WHERE customer_id LIKE ?", prefix+"%").Scan(&orders, &tokens)
	if err != nil {
		return err
	}
	r.DBDuplicates = ptr(int(orders - tokens))
	r.DBKeys = int(tokens)
	r.DuplicateCheck = "orders table: COUNT(*) - COUNT(DISTINCT token_hash) over the run's storm customers; answers: distinct order ids and replayed=false per token"
	if orders != settled {
		r.Notes = append(r.Notes, "orders in the table ("+strconv.FormatInt(orders, 10)+") differ from tokens answered with an order ("+strconv.FormatInt(settled, 10)+")")
	}
	return nil
}

// naiveOp is the check-then-insert baseline without tokens or unique key:
// StormCallers callers send one request key at once, each inserting an
// order if a COUNT finds none.
func (b *bench) naiveOp(prefix string) op {
	var seq atomic.Int64
	return func(ctx context.Context, w *worker) error {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		key := prefix + strconv.FormatInt(seq.Add(1), 10)
		cust := customer(w.rng)
		n := b.cfg.StormCallers
		lats := make([]time.Duration, n)
		errs := make([]error, n)
		var inserted atomic.Int64
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-gate
				t0 := time.Now()
				var cnt int
				err := b.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM naive_orders WHERE request_key = ?", key).Scan(&cnt)
				if err == nil && cnt == 0 {
					_, err = b.db.ExecContext(ctx, "INSERT INTO naive_orders (request_key, customer_id, total_minor, create_time) VALUES (?, ?, ?, ?)",
						key, cust, 300, time.Now().UTC())
					if err == nil {
						inserted.Add(1)
					}
				}
				lats[i], errs[i] = time.Since(t0), err
			})
		}
		close(gate)
		wg.Wait()
		var firstErr error
		for i := range n {
			if errs[i] != nil {
				w.subErr = append(w.subErr, errs[i])
				firstErr = cmpOr(firstErr, errs[i])
				continue
			}
			w.sub = append(w.sub, lats[i])
		}
		if inserted.Load() == 0 {
			return cmpOr(firstErr, benchError("NO_ORDER"))
		}
		w.dups = int(inserted.Load()) - 1
		return nil
	}
}

// checkNaive counts the naive baseline's duplicate rows in its table.
func (b *bench) checkNaive(ctx context.Context, r *Result, prefix string) error {
	var rows, keys, dupKeys int64
	err := b.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(n), 0), COUNT(*), COALESCE(SUM(n > 1), 0) FROM
  (SELECT COUNT(*) AS n FROM naive_orders WHERE request_key LIKE ? GROUP BY request_key) k`, prefix+"%").Scan(&rows, &keys, &dupKeys)
	if err != nil {
		return err
	}
	r.DBDuplicates = ptr(int(rows - keys))
	r.DBKeys = int(keys)
	r.DBDuplicateKeys = ptr(int(dupKeys))
	r.DuplicateCheck = "naive_orders: rows minus distinct request keys over the run; answers: inserts per key minus one"
	return nil
}

// The SQL orderd sends for one order of two lines (store/tokens.go,
// store/orders.go), verbatim: the floor is the same statements without
// gRPC and without orderd.
const (
	sqlInsertToken = `INSERT INTO tokens (token_hash, customer_id, issue_time, expire_time) VALUES (?, ?, ?, ?)`
	// sqlInsertTokenCapped is IssueToken with orderd's default
	// -max-outstanding-tokens (store.insertTokenCapped).
	sqlInsertTokenCapped = `INSERT INTO tokens (token_hash, customer_id, issue_time, expire_time)
SELECT ?, ?, ?, ? FROM DUAL
WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM tokens WHERE customer_id = ? AND expire_time > ? LIMIT ?) AS outstanding) < ?`
	// sqlConsumeToken is store.consumeToken: the multi-table form, the
	// one that takes the index hint, with the primary key forced.
	sqlConsumeToken = `DELETE t FROM tokens AS t FORCE INDEX (PRIMARY) WHERE t.token_hash = ? AND t.customer_id = ? AND t.expire_time > ?`
	sqlLockProducts = `SELECT sku, unit_price_minor, currency, stock FROM products WHERE sku IN (?, ?) ORDER BY sku FOR UPDATE`
	sqlReserveStock = `UPDATE products SET stock = CASE sku WHEN ? THEN stock - ? WHEN ? THEN stock - ? END WHERE sku IN (?, ?)`
	sqlInsertOrder  = `INSERT INTO orders (id, customer_id, token_hash, total_minor, currency, status, create_time) VALUES (?, ?, ?, ?, ?, ?, ?)`
	sqlInsertLines  = `INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor, line_total_minor) VALUES (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?)`
	// sqlClaimOutcome is store.claimOutcome, sqlFillOutcome store.fillOutcome.
	sqlClaimOutcome = `INSERT INTO outcomes (token_hash, customer_id, request_hash, order_id, rejection, body, create_time) VALUES (?, ?, ?, NULL, NULL, '', ?)`
	sqlFillOutcome  = `UPDATE outcomes SET order_id = ?, rejection = ?, body = ? WHERE token_hash = ?`
)

// The placement's three round trips (store/orders.go, store/tx.go): START
// TRANSACTION with the outcome claim and the DELETE; the locking SELECT;
// the stock UPDATE, the order and lines INSERTs and the outcome UPDATE with
// the COMMIT (multi-statement queries, which store.Open enables).
const (
	sqlBeginConsume = "START TRANSACTION; " + sqlClaimOutcome + "; " + sqlConsumeToken
	sqlWriteCommit  = sqlReserveStock + "; " + sqlInsertOrder + "; " + sqlInsertLines + "; " + sqlFillOutcome + "; COMMIT"
)

// rawOp is the floor of flow: the token INSERT, then the placement
// transaction, from this process with orderd's DSN parameters and pool.
func (b *bench) rawOp(db *sql.DB) op {
	return func(ctx context.Context, w *worker) error {
		t := newToken()
		hash := store.HashToken(t)
		cust := customer(w.rng)
		if err := b.rawIssue(ctx, db, hash, cust); err != nil {
			return err
		}
		x, y := b.items(w.rng)
		return b.rawPlace(ctx, db, hash, cust, x, y)
	}
}

// rawIssue inserts a token as orderd's IssueToken does: capped at
// -floor-token-cap outstanding tokens per customer, or plain with 0.
func (b *bench) rawIssue(ctx context.Context, db *sql.DB, hash []byte, cust string) error {
	now := time.Now().UTC().Truncate(time.Microsecond)
	limit := b.cfg.FloorTokenCap
	if limit == 0 {
		_, err := db.ExecContext(ctx, sqlInsertToken, hash, cust, now, now.Add(time.Hour))
		return err
	}
	res, err := db.ExecContext(ctx, sqlInsertTokenCapped, hash, cust, now, now.Add(time.Hour), cust, now, limit, limit)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return cmpOr(err, benchError("TOO_MANY_TOKENS"))
	}
	return nil
}

// rawPlaceOp is the floor of place: the placement transaction alone, with
// a pre-issued token.
func (b *bench) rawPlaceOp(db *sql.DB, p *tokenPool) op {
	return func(ctx context.Context, w *worker) error {
		t, ok := p.take()
		if !ok {
			return errExhausted
		}
		// orderd hashes the token it receives.
		hash := store.HashToken(t.token)
		x, y := b.items(w.rng)
		return b.rawPlace(ctx, db, hash, t.customer, x, y)
	}
}

// rawBody is the stored outcome's JSON, as orderd writes it.
type rawBody struct {
	Order *store.Order `json:"order"`
}

// rawPlace runs orderd's placement transaction for two SKUs (x < y),
// rerun on deadlock or lock wait timeout like orderd's.
func (b *bench) rawPlace(ctx context.Context, db *sql.DB, hash []byte, cust, x, y string) error {
	fp := fingerprint(cust, x, y)
	for attempt := 1; ; attempt++ {
		err := b.rawPlaceTx(ctx, db, hash, fp, cust, x, y)
		var me *mysql.MySQLError
		if err == nil || attempt >= 4 || !errors.As(err, &me) || (me.Number != 1213 && me.Number != 1205) {
			return err
		}
		b.rawRetries.Add(1)
		time.Sleep(mrand.N((5*time.Millisecond)<<(attempt-1)) + time.Millisecond)
	}
}

func (b *bench) rawPlaceTx(ctx context.Context, db *sql.DB, hash, fp []byte, cust, x, y string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// Like orderd's store: START TRANSACTION with the DELETE, COMMIT with
	// the writes, ROLLBACK (or a discarded connection) on any failure.
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	committed := false
	defer func() {
		if !committed {
			if _, err := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
				conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}
	}()
	now := time.Now().UTC().Truncate(time.Microsecond)
	res, err := conn.ExecContext(ctx, sqlBeginConsume, hash, cust, fp, now, hash, cust, now)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return cmpOr(err, benchError("TOKEN_NOT_CONSUMED"))
	}
	order, err := lockProducts(ctx, conn, cust, x, y, now)
	if err != nil {
		return err
	}
	body, err := json.Marshal(rawBody{Order: order})
	if err != nil {
		return err
	}
	l1, l2 := order.Lines[0], order.Lines[1]
	reserve := []any{x, 1, y, 1, x, y}
	insOrder := []any{order.ID, cust, hash, order.TotalMinor, order.Currency, order.Status, now}
	insLines := []any{order.ID, 1, l1.SKU, l1.Quantity, l1.UnitPriceMinor, l1.LineTotalMinor,
		order.ID, 2, l2.SKU, l2.Quantity, l2.UnitPriceMinor, l2.LineTotalMinor}
	fillOutcome := []any{order.ID, nil, body, hash}
	args := slices.Concat(reserve, insOrder, insLines, fillOutcome)
	if _, err := conn.ExecContext(ctx, sqlWriteCommit, args...); err != nil {
		return err
	}
	committed = true
	return nil
}

// lockProducts locks and reads the two products (x < y) like orderd and
// prices the order.
func lockProducts(ctx context.Context, conn *sql.Conn, cust, x, y string, now time.Time) (*store.Order, error) {
	rows, err := conn.QueryContext(ctx, sqlLockProducts, x, y)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	order := &store.Order{ID: uuid.Must(uuid.NewV7()).String(), CustomerID: cust, Status: store.OrderStatusPlaced, CreateTime: now}
	for rows.Next() {
		var p store.Product
		if err := rows.Scan(&p.SKU, &p.UnitPriceMinor, &p.Currency, &p.Stock); err != nil {
			return nil, err
		}
		if p.Stock < 1 {
			return nil, benchError("OUT_OF_STOCK")
		}
		order.Currency = p.Currency
		order.TotalMinor += p.UnitPriceMinor
		order.Lines = append(order.Lines, store.Line{SKU: p.SKU, Quantity: 1, UnitPriceMinor: p.UnitPriceMinor, LineTotalMinor: p.UnitPriceMinor})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(order.Lines) != 2 {
		return nil, benchError("PRODUCT_NOT_FOUND")
	}
	return order, nil
}

// fingerprint is a request fingerprint computed like orderd's (SHA-256 of
// the customer and the sorted lines).
func fingerprint(cust string, skus ...string) []byte {
	h := sha256.New()
	var n [8]byte
	put := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put(cust)
	for _, s := range skus {
		put(s)
		binary.BigEndian.PutUint64(n[:], 1)
		h.Write(n[:])
	}
	return h.Sum(nil)
}
