package server_test

import (
	"context"
	"encoding/base64"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// blocking holds IssueToken calls for customer "block" until release is
// closed or receives.
type blocking struct {
	server.Store
	entered chan struct{}
	release chan struct{}
}

func (b *blocking) IssueToken(ctx context.Context, customerID string) (store.IssuedToken, error) {
	if customerID == "block" {
		b.entered <- struct{}{}
		select {
		case <-b.release:
		case <-ctx.Done():
			return store.IssuedToken{}, ctx.Err()
		}
	}
	return b.Store.IssueToken(ctx, customerID)
}

// TestMaxConcurrentStreams: with a limit of 2 calls per connection and two
// calls held in their handler, a third call on that connection waits (the
// grpc-go client queues it until the server's SETTINGS allow another
// stream; a client that ignored them would get REFUSED_STREAM, which
// grpc-go answers UNAVAILABLE) and its handler does not run; with a
// deadline it ends DEADLINE_EXCEEDED. Other connections are served
// meanwhile, and the waiting call runs once a slot frees.
func TestMaxConcurrentStreams(t *testing.T) {
	st, _ := storetest.New(t, store.Options{})
	b := &blocking{Store: st, entered: make(chan struct{}, 10), release: make(chan struct{})}
	addr := servertest.Start(t, b, server.Options{MaxConcurrentStreams: 2})
	orders := orderv1.NewOrderServiceClient(dial(t, addr, insecure.NewCredentials()))
	ctx := context.Background()

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "block"}); err != nil {
				t.Errorf("held call: %v", err)
			}
		})
	}
	<-b.entered
	<-b.entered

	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := orders.IssueToken(dctx, &orderv1.IssueTokenRequest{CustomerId: "block"})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("third call with a deadline: %v, want DEADLINE_EXCEEDED", err)
	}
	select {
	case <-b.entered:
		t.Error("the third call's handler ran beyond the limit")
	default:
	}

	other := orderv1.NewOrderServiceClient(dial(t, addr, insecure.NewCredentials()))
	if _, err := other.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"}); err != nil {
		t.Errorf("another connection while this one is at its limit: %v", err)
	}

	var released atomic.Bool
	waited := make(chan error, 1)
	go func() {
		_, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"})
		if !released.Load() {
			t.Error("a call beyond the limit finished before any slot was freed")
		}
		waited <- err
	}()
	released.Store(true)
	b.release <- struct{}{}
	if err := <-waited; err != nil {
		t.Errorf("the waiting call: %v", err)
	}
	close(b.release)
	wg.Wait()
}

// TestPageTokensAreTamperEvident: replicas sharing a database accept each
// other's page tokens; any change to a token, a token shown with another
// customer, or one signed with another database's key is
// INVALID_PAGE_TOKEN.
func TestPageTokensAreTamperEvident(t *testing.T) {
	st, dsn := storetest.New(t, store.Options{TokenTTL: time.Hour})
	replica, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	ctx := context.Background()
	a := orderv1.NewOrderServiceClient(dial(t, servertest.Start(t, st, server.Options{}), insecure.NewCredentials()))
	b := orderv1.NewOrderServiceClient(dial(t, servertest.Start(t, replica, server.Options{}), insecure.NewCredentials()))
	products := orderv1.NewProductServiceClient(dial(t, servertest.Start(t, st, server.Options{}), insecure.NewCredentials()))
	if _, err := products.PutProduct(ctx, &orderv1.PutProductRequest{Product: &orderv1.Product{Sku: "apple", Name: "Apple", UnitPriceMinor: 1, Currency: "EUR", Stock: 100}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"alice", "alice", "alice", "bob", "bob", "bob"} {
		tok, err := a.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: c})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: tok.GetToken(), CustomerId: c, Items: items("apple", 1)}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := a.ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: "alice", PageSize: 1})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v", first, err)
	}
	pt := first.GetNextPageToken()
	next, err := b.ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: "alice", PageSize: 1, PageToken: pt})
	if err != nil || len(next.GetOrders()) != 1 || next.GetOrders()[0].GetId() == first.GetOrders()[0].GetId() {
		t.Fatalf("the second page from the other replica: %v, %v", next, err)
	}

	invalid := func(t *testing.T, what, customer, token string) {
		t.Helper()
		resp, err := a.ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: customer, PageToken: token})
		if err == nil {
			t.Fatalf("%s: answered %d orders, want INVALID_PAGE_TOKEN", what, len(resp.GetOrders()))
		}
		wantError(t, err, codes.InvalidArgument, "INVALID_PAGE_TOKEN")
	}
	raw, err := base64.RawURLEncoding.DecodeString(pt)
	if err != nil {
		t.Fatalf("page token is not base64url: %v", err)
	}
	t.Run("every changed byte", func(t *testing.T) {
		for i := range raw {
			for _, flip := range []byte{0x01, 0x80} {
				m := append([]byte(nil), raw...)
				m[i] ^= flip
				invalid(t, "flipped byte", "alice", base64.RawURLEncoding.EncodeToString(m))
			}
		}
	})
	t.Run("truncated, extended, respelled", func(t *testing.T) {
		invalid(t, "truncated", "alice", base64.RawURLEncoding.EncodeToString(raw[:len(raw)-1]))
		invalid(t, "extended", "alice", base64.RawURLEncoding.EncodeToString(append(raw, 0)))
		invalid(t, "padded", "alice", base64.URLEncoding.EncodeToString(raw))
		invalid(t, "last character respelled", "alice", pt[:len(pt)-1]+string(pt[len(pt)-1]^1))
	})
	t.Run("another customer", func(t *testing.T) {
		invalid(t, "alice's token for bob", "bob", pt)
	})
	t.Run("another database's key", func(t *testing.T) {
		other, _ := storetest.New(t, store.Options{})
		c := orderv1.NewOrderServiceClient(dial(t, servertest.Start(t, other, server.Options{}), insecure.NewCredentials()))
		_, err := c.ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: "alice", PageToken: pt})
		wantError(t, err, codes.InvalidArgument, "INVALID_PAGE_TOKEN")
	})
}
