package main

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"

	"github.com/go-sql-driver/mysql"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/store"
)

// RoundTrips are database round trips per call, counted on the wire: the
// MySQL commands (COM_QUERY packets) the client sent through a counting
// proxy, one call at a time. A multi-statement query is one round trip;
// the server's Questions counts each of its statements.
type RoundTrips struct {
	Calls int `json:"calls"`
	// orderd, through the proxy on a separate orderd process.
	IssueToken float64 `json:"issue_token"`
	PlaceOrder float64 `json:"place_order"`
	Replay     float64 `json:"place_order_replay"`
	// The floor, through the proxy from this process.
	FloorIssue float64 `json:"floor_issue"`
	FloorPlace float64 `json:"floor_place"`
}

// comQuery is the MySQL command byte of a text query.
const comQuery = 0x03

// queryCounter is a TCP proxy to a MySQL server that counts the COM_QUERY
// commands clients send through it. It parses only packet headers of the
// client → server stream: a command is a packet with sequence id 0.
type queryCounter struct {
	l        net.Listener
	upstream string
	queries  atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startQueryCounter(upstream string) (*queryCounter, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	q := &queryCounter{l: l, upstream: upstream}
	q.wg.Go(q.serve)
	return q, nil
}

func (q *queryCounter) addr() string { return q.l.Addr().String() }

func (q *queryCounter) serve() {
	for {
		c, err := q.l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", q.upstream)
		if err != nil {
			c.Close()
			continue
		}
		q.mu.Lock()
		q.conns = append(q.conns, c, u)
		q.mu.Unlock()
		q.wg.Go(func() {
			q.count(u, c)
			u.Close()
		})
		q.wg.Go(func() {
			io.Copy(c, u)
			c.Close()
		})
	}
}

// count copies the client's stream to the server and counts its queries.
func (q *queryCounter) count(dst io.Writer, src io.Reader) {
	var (
		hdr  [4]byte
		nhdr int  // header bytes seen of the current packet
		left int  // payload bytes still to come
		cmd  bool // the current packet starts a command
		buf  = make([]byte, 64<<10)
	)
	for {
		n, err := src.Read(buf)
		for p := buf[:n]; len(p) > 0; {
			switch {
			case nhdr < 4:
				k := copy(hdr[nhdr:], p)
				nhdr += k
				p = p[k:]
				if nhdr == 4 {
					left = int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
					cmd = hdr[3] == 0
					if left == 0 {
						nhdr = 0
					}
				}
			default:
				if cmd {
					if p[0] == comQuery {
						q.queries.Add(1)
					}
					cmd = false
				}
				k := min(left, len(p))
				left -= k
				p = p[k:]
				if left == 0 {
					nhdr = 0
				}
			}
		}
		if _, werr := dst.Write(buf[:n]); werr != nil || err != nil {
			return
		}
	}
}

func (q *queryCounter) close() {
	q.l.Close()
	q.mu.Lock()
	for _, c := range q.conns {
		c.Close()
	}
	q.mu.Unlock()
	q.wg.Wait()
}

// roundTrips counts database round trips per call, for orderd and for the
// floor, one call at a time through a queryCounter. orderd runs as a second
// process for this, so the measured one keeps its direct connection.
func (b *bench) roundTrips(ctx context.Context, calls int) (rt *RoundTrips, err error) {
	cfg, err := mysql.ParseDSN(b.dsn)
	if err != nil {
		return nil, err
	}
	qc, err := startQueryCounter(cfg.Addr)
	if err != nil {
		return nil, err
	}
	defer qc.close()
	cfg.Addr = qc.addr()
	dsn := cfg.FormatDSN()

	od, err := startOrderd(ctx, b.orderdBin, b.tmp, b.cfg.OrderdLog, dsn, []string{"-janitor-interval=0", "-log-level=warn"})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, od.stop()) }()
	conn, err := grpc.NewClient(od.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cl := orderv1.NewOrderServiceClient(conn)

	st, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	floor := st.DB()

	rng := rand.New(rand.NewPCG(1, 2))
	// placed is a token (the floor: its hash) and the order made with it.
	type placed struct{ token, customer, x, y string }
	toks := make([]placed, calls)
	// per runs fn calls times after one unmeasured call (which opens the
	// connections and warms the pools) and returns queries per call.
	per := func(fn func(i int) error) (float64, error) {
		if err := fn(-1); err != nil {
			return 0, err
		}
		before := qc.queries.Load()
		for i := range calls {
			if err := fn(i); err != nil {
				return 0, err
			}
		}
		return float64(qc.queries.Load()-before) / float64(calls), nil
	}
	rt = &RoundTrips{Calls: calls}
	steps := []struct {
		into *float64
		fn   func(i int) error
	}{
		{&rt.IssueToken, func(i int) error {
			cust := customer(rng)
			r, err := cl.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: cust})
			if i >= 0 && err == nil {
				toks[i] = placed{token: r.GetToken(), customer: cust}
			}
			return err
		}},
		{&rt.PlaceOrder, func(i int) error {
			if i < 0 {
				return nil // the connections are warm from IssueToken
			}
			t := &toks[i]
			t.x, t.y = b.items(rng)
			_, err := cl.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: t.token, CustomerId: t.customer, Items: lineItems(t.x, t.y)})
			return err
		}},
		{&rt.Replay, func(i int) error {
			t := toks[max(i, 0)]
			r, err := cl.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: t.token, CustomerId: t.customer, Items: lineItems(t.x, t.y)})
			if err == nil && !r.GetReplayed() {
				err = errors.New("a retry was not replayed")
			}
			return err
		}},
		{&rt.FloorIssue, func(i int) error {
			hash := store.HashToken(newToken())
			cust := customer(rng)
			if err := b.rawIssue(ctx, floor, hash, cust); err != nil {
				return err
			}
			if i >= 0 {
				toks[i] = placed{token: string(hash), customer: cust}
			}
			return nil
		}},
		{&rt.FloorPlace, func(i int) error {
			if i < 0 {
				return nil
			}
			x, y := b.items(rng)
			return b.rawPlace(ctx, floor, []byte(toks[i].token), toks[i].customer, x, y)
		}},
	}
	for _, s := range steps {
		if *s.into, err = per(s.fn); err != nil {
			return nil, err
		}
	}
	return rt, nil
}
