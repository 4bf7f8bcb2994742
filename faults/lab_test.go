package faults

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/orderd/orderd/client"
	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// lab is one scenario's world: a database, orderd in-process behind a
// toxiproxy link to the database, a client behind a toxiproxy link to
// orderd, and a direct (unproxied) connection for checks and KILL.
type lab struct {
	t         testing.TB
	dbServer  *storetest.Server // set when the scenario owns its database server
	dsn       string            // direct DSN of the scenario's database
	direct    *sql.DB
	toxi      *toxiproxy.ApiServer
	dbLink    *toxiproxy.Proxy
	grpcLink  *toxiproxy.Proxy
	grpcAddr  string // orderd's own address (fixed across restarts)
	log       *slog.Logger
	storeOpts store.Options

	mu  sync.Mutex
	st  *store.Store
	srv *server.Server

	client *client.Client
	stock  map[string]int64 // initial stock by SKU
}

type labOptions struct {
	// ownServer gives the scenario its own MariaDB, which it may stop.
	ownServer bool
	// attempts and perAttempt configure the client's retries.
	attempts   int
	perAttempt time.Duration
}

func newLab(t testing.TB, o labOptions) *lab {
	t.Helper()
	l := &lab{t: t, stock: map[string]int64{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if o.ownServer {
		l.dbServer = storetest.NewServer(t)
		l.dsn = l.dbServer.DSN("orderd")
	} else {
		l.dsn = storetest.NewDatabase(t)
	}
	l.direct = storetest.DB(t, l.dsn)
	cfg, err := mysql.ParseDSN(l.dsn)
	if err != nil {
		t.Fatal(err)
	}

	l.toxi = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	l.dbLink = l.proxy("mysql", cfg.Addr)
	proxied := cfg.Clone()
	proxied.Addr = l.dbLink.Listen

	// Migrate directly, then let orderd reach the database only through
	// the link.
	st, err := store.Open(context.Background(), l.dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	l.storeOpts = store.Options{LockWait: 2 * time.Second, MaxOpenConns: 32}
	l.st, err = store.Open(context.Background(), proxied.FormatDSN(), l.storeOpts)
	if err != nil {
		t.Fatal(err)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.grpcAddr = lis.Addr().String()
	l.serve(lis)
	l.grpcLink = l.proxy("grpc", l.grpcAddr)

	if o.attempts == 0 {
		o.attempts = 8
	}
	if o.perAttempt == 0 {
		o.perAttempt = 5 * time.Second
	}
	l.client, err = client.Dial(l.grpcLink.Listen,
		client.WithMaxAttempts(o.attempts),
		client.WithPerAttemptTimeout(o.perAttempt),
		client.WithBackoff(20*time.Millisecond, 0.5, 500*time.Millisecond),
		client.WithOnRetry(countAttempt))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.client.Close()
		l.mu.Lock()
		srv, st := l.srv, l.st
		l.mu.Unlock()
		srv.Shutdown(context.Background())
		st.Close()
		l.grpcLink.Stop()
		l.dbLink.Stop()
	})
	return l
}

func (l *lab) proxy(name, upstream string) *toxiproxy.Proxy {
	l.t.Helper()
	p := toxiproxy.NewProxy(l.toxi, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		l.t.Fatalf("start %s proxy: %v", name, err)
	}
	return p
}

func (l *lab) serve(lis net.Listener) {
	l.t.Helper()
	srv, err := server.New(l.st, server.Options{Logger: l.log})
	if err != nil {
		l.t.Fatal(err)
	}
	go srv.Serve(lis)
	l.mu.Lock()
	l.srv = srv
	l.mu.Unlock()
}

// restartOrderd stops orderd as SIGTERM does, letting calls in flight
// finish for up to grace (0: cut them at once, as a crash would), and after
// down starts a new server and connection pool on the same address, as a
// process restart would.
func (l *lab) restartOrderd(grace, down time.Duration) {
	l.t.Helper()
	l.mu.Lock()
	srv, st := l.srv, l.st
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	srv.Shutdown(ctx)
	cancel()
	st.Close()
	time.Sleep(down)
	proxied := l.dbLink.Listen
	cfg, _ := mysql.ParseDSN(l.dsn)
	cfg.Addr = proxied
	var err error
	for range 50 { // the old listener's port may take a moment to free
		var nst *store.Store
		if nst, err = store.Open(context.Background(), cfg.FormatDSN(), l.storeOpts); err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var lis net.Listener
		if lis, err = net.Listen("tcp", l.grpcAddr); err != nil {
			nst.Close()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		l.st = nst
		l.mu.Unlock()
		l.serve(lis)
		return
	}
	l.t.Fatalf("restart orderd: %v", err)
}

// store returns orderd's current store.
func (l *lab) store() *store.Store {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// addToxic adds a toxic to a link and returns a func that removes it.
func (l *lab) addToxic(p *toxiproxy.Proxy, typ, streamDir string, attrs string) func() {
	l.t.Helper()
	name := fmt.Sprintf("%s_%s_%d", typ, streamDir, time.Now().UnixNano())
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, typ, streamDir, attrs)
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		l.t.Fatalf("add toxic %s: %v", js, err)
	}
	return func() { _ = p.Toxics.RemoveToxic(context.Background(), name) }
}

// seed creates products with stock, priced 100 EUR minor units each.
func (l *lab) seed(stock map[string]int64) {
	l.t.Helper()
	for sku, n := range stock {
		if _, err := l.store().PutProduct(context.Background(), store.Product{SKU: sku, Name: sku, UnitPriceMinor: 100, Currency: "EUR", Stock: n}); err != nil {
			l.t.Fatal(err)
		}
		l.stock[sku] = n
	}
}

// issue gets a token for customer through the client.
func (l *lab) issue(ctx context.Context, customer string) (string, error) {
	resp, err := l.client.Orders().IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: customer})
	if err != nil {
		return "", err
	}
	return resp.GetToken(), nil
}
