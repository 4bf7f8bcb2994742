package faults

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"google.golang.org/grpc/codes"

	"github.com/orderd/orderd/client"
)

func timeout(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

func (l *lab) countRows(table, where string, args ...any) int {
	l.t.Helper()
	var n int
	if err := l.direct.QueryRow("SELECT COUNT(*) FROM "+table+" "+where, args...).Scan(&n); err != nil {
		l.t.Fatal(err)
	}
	return n
}

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// placeOne issues a token for alice and returns an op of 2 × A for it.
func (l *lab) placeOne(ctx context.Context) *op {
	l.t.Helper()
	tok, err := l.issue(ctx, "alice")
	if err != nil {
		l.t.Fatal(err)
	}
	return &op{Token: tok, Customer: "alice", Items: []client.Item{{SKU: "A", Quantity: 2}}}
}

// Scenario 1: the reply is lost after the commit. The client retries with
// the same token and gets the first order, marked as a replay; one order.
func TestReplyLostAfterCommit(t *testing.T) {
	l := newLab(t, labOptions{})
	l.seed(map[string]int64{"A": 10})
	ctx := timeout(t, time.Minute)
	o := l.placeOne(ctx) // the connection is up before the toxic
	defer l.addToxic(l.grpcLink, "swallow_then_reset", "downstream", `{"hold_ms":300}`)()
	if !l.place(ctx, o) || o.OrderID == "" {
		t.Fatalf("not placed: %v", o.Final)
	}
	if !o.Replayed || len(o.Failed) == 0 {
		t.Errorf("replayed=%v after failed attempts %v: the first reply was not lost after the commit", o.Replayed, o.Failed)
	}
	if n := l.countRows("orders", ""); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
	l.checkInvariants(t, &history{ops: []*op{o}})
}

// Scenario 2: the orderd ↔ MySQL connection is reset before COMMIT (the
// transaction rolls back; the retry places the order) and after COMMIT was
// sent but before its acknowledgement (the commit landed; the retry
// replays it). Both first answer UNAVAILABLE and converge to one order.
func TestDatabaseConnectionResetAroundCommit(t *testing.T) {
	for _, tc := range []struct {
		name        string
		after       bool
		wantReplay  bool
		description string
	}{
		{"before commit", false, false, "rolled back, then placed by the retry"},
		{"after commit", true, true, "committed, then replayed to the retry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, labOptions{})
			l.seed(map[string]int64{"A": 10})
			ctx := timeout(t, time.Minute)
			o := l.placeOne(ctx)
			defer l.addToxic(l.dbLink, "mysql_commit_cut", "upstream", fmt.Sprintf(`{"after":%v}`, tc.after))()
			if !l.place(ctx, o) || o.OrderID == "" {
				t.Fatalf("not placed: %v", o.Final)
			}
			if len(o.Failed) == 0 || o.Failed[0] != codes.Unavailable {
				t.Errorf("failed attempts %v, want UNAVAILABLE first", o.Failed)
			}
			if o.Replayed != tc.wantReplay {
				t.Errorf("replayed = %v, want %v (%s)", o.Replayed, tc.wantReplay, tc.description)
			}
			if n := l.countRows("orders", ""); n != 1 {
				t.Errorf("%d orders, want 1", n)
			}
			l.checkInvariants(t, &history{ops: []*op{o}})
		})
	}
}

// Scenario 3: KILL of orderd's database connection in the middle of the
// transaction (while it waits for a product lock): the transaction rolls
// back, the token stays usable, the retry places exactly one order, and
// no pool connection leaks.
func TestKillConnectionMidTransaction(t *testing.T) {
	l := newLab(t, labOptions{attempts: 1}) // retried by hand, to look at the token in between
	l.seed(map[string]int64{"A": 10})
	ctx := timeout(t, time.Minute)
	o := l.placeOne(ctx)

	blocker, err := l.direct.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var stock int64
	if err := blocker.QueryRowContext(ctx, "SELECT stock FROM products WHERE sku = 'A' FOR UPDATE").Scan(&stock); err != nil {
		t.Fatal(err)
	}
	done := make(chan bool)
	go func() { done <- l.place(ctx, o) }()

	cfg, _ := mysql.ParseDSN(l.dsn)
	var id int64
	for id == 0 {
		err := l.direct.QueryRowContext(ctx, `SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND INFO LIKE 'SELECT sku, unit_price_minor%FOR UPDATE'`, cfg.DBName).Scan(&id)
		if err != nil && ctx.Err() != nil {
			t.Fatalf("orderd's transaction never waited on the product lock: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := l.direct.ExecContext(ctx, fmt.Sprintf("KILL %d", id)); err != nil {
		t.Fatal(err)
	}
	if err := blocker.Rollback(); err != nil {
		t.Fatal(err)
	}
	if known := <-done; known || o.Final != codes.Unavailable {
		t.Fatalf("after KILL: known=%v code=%v, want UNAVAILABLE", known, o.Final)
	}
	if n := l.countRows("tokens", "WHERE token_hash = ?", tokenHash(o.Token)); n != 1 {
		t.Errorf("the token was consumed by the killed transaction")
	}
	if n := l.countRows("orders", ""); n != 0 {
		t.Errorf("%d orders after the killed transaction, want 0", n)
	}
	if !l.place(ctx, o) || o.OrderID == "" || o.Replayed {
		t.Fatalf("retry: code %v replayed %v, want a new order", o.Final, o.Replayed)
	}
	if n := l.countRows("orders", ""); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
	l.checkInvariants(t, &history{ops: []*op{o}})
	for st := l.store().DB().Stats(); st.InUse != 0; st = l.store().DB().Stats() {
		if ctx.Err() != nil {
			t.Fatalf("%d pool connections still in use", st.InUse)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Scenario 4: database latency beyond the caller's deadline gives
// DEADLINE_EXCEEDED; once the latency is gone the retry converges.
func TestDatabaseLatencyBeyondDeadline(t *testing.T) {
	l := newLab(t, labOptions{attempts: 1})
	l.seed(map[string]int64{"A": 10})
	o := l.placeOne(timeout(t, time.Minute))
	remove := l.addToxic(l.dbLink, "latency", "downstream", `{"latency":1000,"jitter":0}`)
	if l.place(timeout(t, 300*time.Millisecond), o) || o.Final != codes.DeadlineExceeded {
		t.Fatalf("with 1s database latency and a 300ms deadline: %v, want DEADLINE_EXCEEDED", o.Final)
	}
	remove()
	if !l.place(timeout(t, time.Minute), o) || o.OrderID == "" {
		t.Fatalf("retry: %v", o.Final)
	}
	if n := l.countRows("orders", ""); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
	l.checkInvariants(t, &history{ops: []*op{o}})
}

// load runs workers that each place orders (token issued first, then
// PlaceOrder with retries) until stop is closed, recording every op.
func (l *lab) load(workers int, stop <-chan struct{}, items func(r *rand.Rand) []client.Item) (*history, *sync.WaitGroup) {
	h := &history{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			customer := fmt.Sprintf("c%d", w)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				tok, err := l.issue(ctx, customer)
				if err != nil {
					// No token, no order: a token issued by a call whose
					// reply was lost is simply never used.
					cancel()
					time.Sleep(20 * time.Millisecond)
					continue
				}
				o := &op{Token: tok, Customer: customer, Items: items(r)}
				h.add(o)
				l.place(ctx, o)
				cancel()
			}
		})
	}
	return h, &wg
}

func oneOf(skus ...string) func(r *rand.Rand) []client.Item {
	return func(r *rand.Rand) []client.Item {
		n := 1 + r.IntN(len(skus))
		picked := slices.Clone(skus)
		r.Shuffle(len(picked), func(i, j int) { picked[i], picked[j] = picked[j], picked[i] })
		items := make([]client.Item, n)
		for i := range items {
			items[i] = client.Item{SKU: picked[i], Quantity: int64(1 + r.IntN(3))}
		}
		return items
	}
}

// Scenario 5: the database is stopped under load and restarted. During the
// outage calls fail only with UNAVAILABLE; afterwards every token that got
// an OK has its order and no token has two.
func TestDatabaseOutageUnderLoad(t *testing.T) {
	l := newLab(t, labOptions{ownServer: true, attempts: 3, perAttempt: 3 * time.Second})
	l.seed(map[string]int64{"A": 1_000_000, "B": 1_000_000, "C": 1_000_000})
	stop := make(chan struct{})
	h, wg := l.load(8, stop, oneOf("A", "B", "C"))
	time.Sleep(700 * time.Millisecond)
	l.dbServer.Stop()
	time.Sleep(1500 * time.Millisecond)
	l.dbServer.Start()
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()

	for _, o := range h.ops {
		for _, c := range o.Failed {
			if c != codes.Unavailable {
				t.Errorf("token %s…: an attempt failed with %v during the outage, want only UNAVAILABLE", o.Token[:8], c)
			}
		}
	}
	unknown := 0
	for _, o := range h.ops {
		if o.OrderID == "" && o.Rejected == "" {
			unknown++
		}
	}
	l.resolve(t, h)
	l.checkInvariants(t, h)
	t.Logf("%s; %d unknown at the end of the load, resolved by retrying", h.summary(), unknown)
	if unknown == 0 {
		t.Error("no call was affected by the outage: the test proved nothing")
	}
}

// Scenario 6: orderd is restarted under load, with clients retrying
// against the new process on the same address: once drained as on SIGTERM
// (calls in flight finish), twice cut at once as by a crash (calls in
// flight are cancelled mid-transaction). Every client ends with exactly one
// order per token.
func TestOrderdRestartUnderLoad(t *testing.T) {
	l := newLab(t, labOptions{attempts: 10, perAttempt: 3 * time.Second})
	l.seed(map[string]int64{"A": 1_000_000, "B": 1_000_000})
	stop := make(chan struct{})
	h, wg := l.load(8, stop, oneOf("A", "B"))
	for _, grace := range []time.Duration{10 * time.Second, 0, 0} {
		time.Sleep(400 * time.Millisecond)
		l.restartOrderd(grace, 200*time.Millisecond)
	}
	time.Sleep(400 * time.Millisecond)
	close(stop)
	wg.Wait()
	l.resolve(t, h)
	l.checkInvariants(t, h)
	retried := 0
	for _, o := range h.ops {
		if o.OrderID == "" {
			t.Errorf("token %s…: no order (%v, %s)", o.Token[:8], o.Final, o.Rejected)
		}
		if len(o.Failed) > 0 {
			retried++
		}
	}
	if n := l.countRows("orders", ""); n != len(h.ops) {
		t.Errorf("%d orders for %d tokens", n, len(h.ops))
	}
	t.Log(h.summary())
	if retried == 0 {
		t.Error("no call was affected by the restart: the test proved nothing")
	}
}

// soakDuration is how long the randomized run lasts: ORDERD_FAULT_SOAK
// (a Go duration), default 4s.
func soakDuration(t testing.TB) time.Duration {
	v := os.Getenv("ORDERD_FAULT_SOAK")
	if v == "" {
		return 4 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("ORDERD_FAULT_SOAK=%q: %v", v, err)
	}
	return d
}

// Scenario 7: many clients for a bounded time while a chaos loop mixes the
// faults above (latency, resets at and around COMMIT, connection resets,
// lost replies, KILL, orderd restarts), with scarce stock so that
// rejections happen too; then heal, retry every unknown outcome with its
// token, and check the invariants over the whole history.
func TestRandomizedFaults(t *testing.T) {
	l := newLab(t, labOptions{attempts: 4, perAttempt: 2 * time.Second})
	l.seed(map[string]int64{"A": 1_000_000, "B": 1_000_000, "C": 1_000_000, "S": 300})
	seed := uint64(time.Now().UnixNano())
	t.Logf("chaos seed %d, soak %v", seed, soakDuration(t))
	r := rand.New(rand.NewPCG(seed, 7))
	cfg, _ := mysql.ParseDSN(l.dsn)

	type fault struct {
		name string
		do   func() (undo func())
	}
	faults := []fault{
		{"db latency", func() func() {
			return l.addToxic(l.dbLink, "latency", "downstream", `{"latency":150,"jitter":100}`)
		}},
		{"db reset", func() func() { return l.addToxic(l.dbLink, "reset_peer", "upstream", `{"timeout":0}`) }},
		{"db cut before commit", func() func() {
			return l.addToxic(l.dbLink, "mysql_commit_cut", "upstream", `{"after":false}`)
		}},
		{"db cut after commit", func() func() {
			return l.addToxic(l.dbLink, "mysql_commit_cut", "upstream", `{"after":true}`)
		}},
		{"reply lost", func() func() {
			return l.addToxic(l.grpcLink, "swallow_then_reset", "downstream", `{"hold_ms":200}`)
		}},
		{"kill orderd connection", func() func() {
			var id int64
			err := l.direct.QueryRow(`SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID() ORDER BY RAND() LIMIT 1`, cfg.DBName).Scan(&id)
			if err == nil {
				_, _ = l.direct.Exec(fmt.Sprintf("KILL %d", id))
			}
			return func() {}
		}},
		{"orderd restart", func() func() {
			l.restartOrderd(time.Duration(r.IntN(2))*time.Second, 100*time.Millisecond)
			return func() {}
		}},
	}
	injected := map[string]int{}
	stop := make(chan struct{})
	h, wg := l.load(12, stop, oneOf("A", "B", "C", "S"))
	var chaos sync.WaitGroup
	var chaosDone atomic.Bool
	chaos.Go(func() {
		for !chaosDone.Load() {
			time.Sleep(time.Duration(50+r.IntN(200)) * time.Millisecond)
			f := faults[r.IntN(len(faults))]
			injected[f.name]++
			undo := f.do()
			time.Sleep(time.Duration(50+r.IntN(300)) * time.Millisecond)
			undo()
		}
	})
	time.Sleep(soakDuration(t))
	chaosDone.Store(true)
	chaos.Wait()
	close(stop)
	wg.Wait()

	l.resolve(t, h)
	l.checkInvariants(t, h)
	t.Logf("%s; faults injected: %v", h.summary(), injected)
	if len(h.ops) == 0 {
		t.Fatal("no operation ran")
	}
}
