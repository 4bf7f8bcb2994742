package server_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// retryInfo returns the RetryInfo delay of err and its pushback trailer.
func retryInfo(tb testing.TB, err error, trailer metadata.MD) (time.Duration, string) {
	tb.Helper()
	var delay time.Duration
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	return delay, strings.Join(trailer.Get("grpc-retry-pushback-ms"), ",")
}

// TestIssueTokenLimits: over the per-customer rate or the outstanding-token
// cap IssueToken answers RESOURCE_EXHAUSTED with RetryInfo (and the
// pushback trailer), counted by limit; other customers and PlaceOrder are
// not affected.
func TestIssueTokenLimits(t *testing.T) {
	ctx := context.Background()
	t.Run("rate", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		st, _ := storetest.New(t, store.Options{TokenTTL: time.Hour})
		// One token every 100s: the test never waits for a refill.
		conn := dial(t, servertest.Start(t, st, server.Options{IssueTokenRate: 0.01, IssueTokenBurst: 3, Metrics: server.NewMetrics(reg)}), insecure.NewCredentials())
		orders, products := orderv1.NewOrderServiceClient(conn), orderv1.NewProductServiceClient(conn)
		if _, err := products.PutProduct(ctx, &orderv1.PutProductRequest{Product: &orderv1.Product{Sku: "apple", Name: "Apple", UnitPriceMinor: 1, Currency: "EUR", Stock: 100}}); err != nil {
			t.Fatal(err)
		}
		var toks []string
		for i := range 3 {
			r, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"})
			if err != nil {
				t.Fatalf("token %d within the burst: %v", i+1, err)
			}
			toks = append(toks, r.GetToken())
		}
		var trailer metadata.MD
		_, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"}, grpc.Trailer(&trailer))
		wantError(t, err, codes.ResourceExhausted, "TOKEN_RATE_LIMITED")
		delay, pushback := retryInfo(t, err, trailer)
		if delay < 90*time.Second || delay > 101*time.Second || pushback != fmt.Sprint(delay.Milliseconds()) {
			t.Errorf("RetryInfo %v, pushback %q; want about 100s (one token at 0.01/s) and the same in ms", delay, pushback)
		}
		if _, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "bob"}); err != nil {
			t.Errorf("another customer: %v", err)
		}
		for _, tok := range toks {
			if _, err := orders.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: tok, CustomerId: "alice", Items: items("apple", 1)}); err != nil {
				t.Errorf("PlaceOrder is not rate limited: %v", err)
			}
		}
		if n := counterValue(t, reg, "orderd_issue_token_limited_total", map[string]string{"limit": "rate"}); n != 1 {
			t.Errorf("orderd_issue_token_limited_total{limit=rate} = %v, want 1", n)
		}
	})

	t.Run("outstanding tokens", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		st, _ := storetest.New(t, store.Options{TokenTTL: time.Hour})
		conn := dial(t, servertest.Start(t, st, server.Options{MaxOutstandingTokens: 2, Metrics: server.NewMetrics(reg)}), insecure.NewCredentials())
		orders, products := orderv1.NewOrderServiceClient(conn), orderv1.NewProductServiceClient(conn)
		if _, err := products.PutProduct(ctx, &orderv1.PutProductRequest{Product: &orderv1.Product{Sku: "apple", Name: "Apple", UnitPriceMinor: 1, Currency: "EUR", Stock: 100}}); err != nil {
			t.Fatal(err)
		}
		var toks []string
		for range 2 {
			r, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			toks = append(toks, r.GetToken())
		}
		var trailer metadata.MD
		_, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"}, grpc.Trailer(&trailer))
		info := wantError(t, err, codes.ResourceExhausted, "TOO_MANY_OUTSTANDING_TOKENS")
		if d := cmp.Diff(map[string]string{"max_outstanding": "2"}, info.GetMetadata()); d != "" {
			t.Errorf("metadata (-want +got):\n%s", d)
		}
		if delay, pushback := retryInfo(t, err, trailer); delay <= 0 || pushback != fmt.Sprint(delay.Milliseconds()) {
			t.Errorf("RetryInfo %v, pushback %q; want both", delay, pushback)
		}
		if _, err := orders.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: toks[0], CustomerId: "alice", Items: items("apple", 1)}); err != nil {
			t.Fatalf("PlaceOrder at the cap: %v", err)
		}
		if _, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"}); err != nil {
			t.Errorf("IssueToken after using a token: %v", err)
		}
		if n := counterValue(t, reg, "orderd_issue_token_limited_total", map[string]string{"limit": "outstanding"}); n != 1 {
			t.Errorf("orderd_issue_token_limited_total{limit=outstanding} = %v, want 1", n)
		}
	})
}

// TestForeignTokensLookRandom: another customer's token, unused, used or
// expired, gets exactly the answer of a token never issued, from PlaceOrder
// and from GetToken (whole status: code, message, details), and is left as
// it was.
func TestForeignTokensLookRandom(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.put(t, "apple", "EUR", 120, 100)
	unused := e.token(t, "alice")
	used := e.token(t, "alice")
	if _, _, err := e.place(ctx, used, "alice", items("apple", 1)); err != nil {
		t.Fatal(err)
	}
	expired := e.token(t, "alice")
	const random = "otk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

	answers := func(tok string) (place, get *status.Status) {
		_, _, err := e.place(ctx, tok, "bob", items("apple", 1))
		_, err2 := e.orders.GetToken(ctx, &orderv1.GetTokenRequest{Token: tok, CustomerId: "bob"})
		return status.Convert(err), status.Convert(err2)
	}
	check := func(t *testing.T, name, tok string) {
		t.Helper()
		wantPlace, wantGet := answers(random)
		if wantPlace.Code() != codes.NotFound || wantGet.Code() != codes.NotFound {
			t.Fatalf("random token: %v / %v, want NOT_FOUND", wantPlace, wantGet)
		}
		place, get := answers(tok)
		if d := cmp.Diff(wantPlace.Proto(), place.Proto(), protocmp.Transform()); d != "" {
			t.Errorf("PlaceOrder with alice's %s token as bob (-random +foreign):\n%s", name, d)
		}
		if d := cmp.Diff(wantGet.Proto(), get.Proto(), protocmp.Transform()); d != "" {
			t.Errorf("GetToken of alice's %s token as bob (-random +foreign):\n%s", name, d)
		}
	}
	check(t, "unused", unused)
	check(t, "used", used)
	e.clock.Advance(2 * time.Hour)
	check(t, "expired", expired)

	// Alice's view is untouched.
	for tok, want := range map[string]orderv1.TokenState{expired: orderv1.TokenState_TOKEN_STATE_EXPIRED, used: orderv1.TokenState_TOKEN_STATE_CONSUMED} {
		ts, err := e.orders.GetToken(ctx, &orderv1.GetTokenRequest{Token: tok, CustomerId: "alice"})
		if err != nil || ts.GetState() != want {
			t.Errorf("alice's token: %v, %v; want %v", ts, err, want)
		}
	}
	e.clock.Advance(-2 * time.Hour)
	ts, err := e.orders.GetToken(ctx, &orderv1.GetTokenRequest{Token: unused, CustomerId: "alice"})
	if err != nil || ts.GetState() != orderv1.TokenState_TOKEN_STATE_ISSUED {
		t.Errorf("alice's unused token after bob's tries: %v, %v; want ISSUED", ts, err)
	}
}

// TestNoSecretsInLogsMetricsOrErrors drives every kind of call and answer,
// with debug logging, and looks for order tokens and bearer tokens in the
// log, the metrics and the statuses.
func TestNoSecretsInLogsMetricsOrErrors(t *testing.T) {
	const bearer = "bearer-secret-never-logged-0123456789"
	tokens, err := server.ParseBearerTokens(strings.NewReader(bearerFile(map[string]string{bearer: "ci"})))
	if err != nil {
		t.Fatal(err)
	}
	var logs servertest.LogBuffer
	reg := prometheus.NewRegistry()
	st, _ := storetest.New(t, store.Options{TokenTTL: time.Hour})
	conn := dial(t, servertest.Start(t, panicky{st}, server.Options{
		Logger: slogTo(&logs), Metrics: server.NewMetrics(reg),
		Auth:           &server.Auth{Tokens: tokens},
		IssueTokenRate: 0.01, IssueTokenBurst: 4, MaxOutstandingTokens: 3,
	}), insecure.NewCredentials())
	orders, products := orderv1.NewOrderServiceClient(conn), orderv1.NewProductServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+bearer)

	var secrets, messages []string
	record := func(err error) {
		if err != nil {
			s := status.Convert(err)
			messages = append(messages, s.Message(), fmt.Sprint(s.Proto()))
		}
	}
	if _, err := products.PutProduct(ctx, &orderv1.PutProductRequest{Product: &orderv1.Product{Sku: "apple", Name: "Apple", UnitPriceMinor: 1, Currency: "EUR", Stock: 1}}); err != nil {
		t.Fatal(err)
	}
	for _, customer := range []string{"alice", "panic", "unavailable"} {
		r, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: customer})
		if err != nil {
			t.Fatal(err)
		}
		tok := r.GetToken()
		secrets = append(secrets, tok)
		for _, req := range []*orderv1.PlaceOrderRequest{
			{Token: tok, CustomerId: customer, Items: items("apple", 1)},
			{Token: tok, CustomerId: customer, Items: items("apple", 1)}, // replay
			{Token: tok, CustomerId: customer, Items: items("apple", 2)}, // reused
			{Token: tok, CustomerId: "mallory", Items: items("apple", 1)},
			{Token: tok, CustomerId: customer, Items: items("apple", 0)}, // invalid
		} {
			_, err := orders.PlaceOrder(ctx, req)
			record(err)
		}
		_, err = orders.GetToken(ctx, &orderv1.GetTokenRequest{Token: tok, CustomerId: customer})
		record(err)
		_, err = orders.GetToken(context.Background(), &orderv1.GetTokenRequest{Token: tok, CustomerId: customer}) // no bearer
		record(err)
	}
	// Three tokens, then the cap, then the rate.
	var limited []codes.Code
	for range 5 {
		r, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "carol"})
		record(err)
		secrets = append(secrets, r.GetToken())
		limited = append(limited, status.Code(err))
	}
	if limited[3] != codes.ResourceExhausted || limited[4] != codes.ResourceExhausted {
		t.Errorf("carol's IssueToken codes %v, want the last two RESOURCE_EXHAUSTED", limited)
	}
	_, err = orders.PlaceOrder(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+bearer+"x"), &orderv1.PlaceOrderRequest{Token: secrets[0], CustomerId: "alice", Items: items("apple", 1)})
	record(err)

	var metricsText bytes.Buffer
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&metricsText, mf); err != nil {
			t.Fatal(err)
		}
	}
	secrets = append(secrets, bearer)
	log := logs.String()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(log, s) {
			t.Errorf("the log holds the secret %q", s)
		}
		if strings.Contains(metricsText.String(), s) {
			t.Errorf("the metrics hold the secret %q", s)
		}
		for _, m := range messages {
			if strings.Contains(m, s) {
				t.Errorf("a status holds the secret %q: %s", s, m)
			}
		}
	}
	if !strings.Contains(log, "token=") || !strings.Contains(log, "identity=ci") {
		t.Errorf("the log has no token= hash prefix or identity; the check above proves nothing:\n%s", log)
	}
}
