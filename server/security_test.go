package server_test

import (
	"context"
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/server/devcert"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

const (
	adminID   = "spiffe://orderd.local/admin"
	shopID    = "spiffe://orderd.local/shop"
	auditorID = "spiffe://orderd.local/auditor"
)

// testPolicy: the admin may call everything, the shop the order API and
// GetProduct, the auditor only reads.
const testPolicy = `{"rules": [
  {"identity": "spiffe://orderd.local/admin", "methods": ["*"]},
  {"identity": "spiffe://orderd.local/shop", "methods": ["/order.v1.OrderService/*", "/order.v1.ProductService/GetProduct"]},
  {"comment": "reads only", "identity": "spiffe://orderd.local/auditor",
   "methods": ["/order.v1.OrderService/Get*", "/order.v1.OrderService/ListOrders"]}
]}`

func mustPolicy(tb testing.TB, s string) *server.Policy {
	tb.Helper()
	p, err := server.ParsePolicy([]byte(s))
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestHandshakeRefused: with mTLS, a client without a certificate, with
// one from another CA, or with an expired one does not get past the TLS
// handshake: the call fails UNAVAILABLE and no handler runs.
func TestHandshakeRefused(t *testing.T) {
	p := newPKI(t)
	st, _ := storetest.New(t, store.Options{})
	cs := &counting{Store: st}
	addr := servertest.Start(t, cs, server.Options{TLS: p.serverTLS(t, true), Auth: &server.Auth{}})

	otherCA, err := devcert.NewAuthority("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA.IssueTLS(devcert.Leaf{URIs: []string{adminID}})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := p.ca.IssueTLS(devcert.Leaf{URIs: []string{adminID}, NotBefore: time.Now().Add(-3 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	notYet, err := p.ca.IssueTLS(devcert.Leaf{URIs: []string{adminID}, NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no client certificate", nil},
		{"certificate from another CA", []tls.Certificate{foreign}},
		{"expired certificate", []tls.Certificate{expired}},
		{"certificate not valid yet", []tls.Certificate{notYet}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := dial(t, addr, clientCreds(p.ca.Pool(), tc.certs...))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := orderv1.NewOrderServiceClient(conn).IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"})
			if status.Code(err) != codes.Unavailable {
				t.Errorf("IssueToken: %v, want UNAVAILABLE (handshake refused)", err)
			}
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if status.Code(err) != codes.Unavailable {
				t.Errorf("health: %v, want UNAVAILABLE (handshake refused)", err)
			}
		})
	}
	t.Run("server not trusted by the client", func(t *testing.T) {
		conn := dial(t, addr, clientCreds(otherCA.Pool(), p.client(t, adminID)))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := orderv1.NewOrderServiceClient(conn).IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"}); status.Code(err) != codes.Unavailable {
			t.Errorf("IssueToken: %v, want UNAVAILABLE", err)
		}
	})
	if n := cs.calls.Load(); n != 0 {
		t.Errorf("%d calls reached the store through refused handshakes, want 0", n)
	}
	t.Run("trusted certificate", func(t *testing.T) {
		conn := dial(t, addr, clientCreds(p.ca.Pool(), p.client(t, adminID)))
		if _, err := orderv1.NewOrderServiceClient(conn).IssueToken(context.Background(), &orderv1.IssueTokenRequest{CustomerId: "alice"}); err != nil {
			t.Errorf("IssueToken: %v", err)
		}
	})
}

// TestPolicyWithClientCertificates checks identity from certificates and
// the policy: denied calls get PERMISSION_DENIED, change nothing, are
// logged with the identity and counted.
func TestPolicyWithClientCertificates(t *testing.T) {
	p := newPKI(t)
	st, _ := storetest.New(t, store.Options{TokenTTL: time.Hour})
	cs := &counting{Store: st}
	var logs servertest.LogBuffer
	reg := prometheus.NewRegistry()
	addr := servertest.Start(t, cs, server.Options{
		TLS:     p.serverTLS(t, true),
		Auth:    &server.Auth{Policy: mustPolicy(t, testPolicy)},
		Logger:  slogTo(&logs),
		Metrics: server.NewMetrics(reg),
	})
	as := func(id string) (orderv1.OrderServiceClient, orderv1.ProductServiceClient, *grpc.ClientConn) {
		conn := dial(t, addr, clientCreds(p.ca.Pool(), p.client(t, id)))
		return orderv1.NewOrderServiceClient(conn), orderv1.NewProductServiceClient(conn), conn
	}
	ctx := context.Background()
	adminOrders, admin, _ := as(adminID)
	shop, shopProducts, _ := as(shopID)
	auditor, _, _ := as(auditorID)
	_, strangerProducts, strangerConn := as("spiffe://orderd.local/stranger")

	apple := &orderv1.Product{Sku: "apple", Name: "Apple", UnitPriceMinor: 120, Currency: "EUR", Stock: 10}
	if _, err := admin.PutProduct(ctx, &orderv1.PutProductRequest{Product: apple}); err != nil {
		t.Fatalf("admin PutProduct: %v", err)
	}

	t.Run("shop may not change products", func(t *testing.T) {
		before := cs.calls.Load()
		_, err := shopProducts.PutProduct(ctx, &orderv1.PutProductRequest{Product: &orderv1.Product{Sku: "apple", Name: "Apple", UnitPriceMinor: 1, Currency: "EUR", Stock: 1000}})
		info := wantError(t, err, codes.PermissionDenied, "PERMISSION_DENIED")
		want := map[string]string{"identity": shopID, "method": "/order.v1.ProductService/PutProduct"}
		if d := cmp.Diff(want, info.GetMetadata()); d != "" {
			t.Errorf("metadata (-want +got):\n%s", d)
		}
		if n := cs.calls.Load() - before; n != 0 {
			t.Errorf("the denied call reached the store %d times", n)
		}
		got, err := shopProducts.GetProduct(ctx, &orderv1.GetProductRequest{Sku: "apple"})
		if err != nil || got.GetProduct().GetStock() != 10 || got.GetProduct().GetUnitPriceMinor() != 120 {
			t.Errorf("apple after the denied PutProduct: %v, %v; want it unchanged", got, err)
		}
	})

	t.Run("a denied PlaceOrder leaves the token unused", func(t *testing.T) {
		tok, err := shop.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		req := &orderv1.PlaceOrderRequest{Token: tok.GetToken(), CustomerId: "alice", Items: items("apple", 1)}
		_, err = auditor.PlaceOrder(ctx, req)
		wantError(t, err, codes.PermissionDenied, "PERMISSION_DENIED")
		ts, err := auditor.GetToken(ctx, &orderv1.GetTokenRequest{Token: tok.GetToken(), CustomerId: "alice"})
		if err != nil || ts.GetState() != orderv1.TokenState_TOKEN_STATE_ISSUED {
			t.Fatalf("token after the denied call: %v, %v; want ISSUED", ts, err)
		}
		if _, err := shop.PlaceOrder(ctx, req); err != nil {
			t.Errorf("shop PlaceOrder with the token afterwards: %v", err)
		}
		if _, err := adminOrders.GetToken(ctx, &orderv1.GetTokenRequest{Token: tok.GetToken(), CustomerId: "alice"}); err != nil {
			t.Errorf("admin GetToken: %v", err)
		}
	})

	t.Run("an identity without rules may call nothing but health", func(t *testing.T) {
		_, err := strangerProducts.GetProduct(ctx, &orderv1.GetProductRequest{Sku: "apple"})
		wantError(t, err, codes.PermissionDenied, "PERMISSION_DENIED")
		resp, err := healthpb.NewHealthClient(strangerConn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health: %v, %v; want SERVING", resp, err)
		}
	})

	t.Run("invalid requests from callers without permission are denied, not validated", func(t *testing.T) {
		_, err := auditor.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{})
		wantError(t, err, codes.PermissionDenied, "PERMISSION_DENIED")
	})

	t.Run("denied calls are counted and logged", func(t *testing.T) {
		if n := counterValue(t, reg, "grpc_server_handled_total", map[string]string{"grpc_method": "PutProduct", "grpc_code": "PermissionDenied"}); n != 1 {
			t.Errorf("grpc_server_handled_total{PutProduct,PermissionDenied} = %v, want 1", n)
		}
		var line string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "grpc.method=PutProduct") && strings.Contains(l, "PermissionDenied") {
				line = l
			}
		}
		if !strings.Contains(line, "identity="+shopID) || !strings.Contains(line, "reason=PERMISSION_DENIED") {
			t.Errorf("log line of the denied PutProduct = %q, want identity=%s and reason=PERMISSION_DENIED", line, shopID)
		}
	})
}

// TestBearerTokens: over server-only TLS, callers are known by bearer
// tokens; without a known one they get UNAUTHENTICATED (the same answer
// whatever is wrong), while health and reflection need none.
func TestBearerTokens(t *testing.T) {
	p := newPKI(t)
	st, _ := storetest.New(t, store.Options{})
	cs := &counting{Store: st}
	const shopToken, adminToken = "shop-secret-token-0123456789", "admin-secret-token-0123456789"
	tokens, err := server.ParseBearerTokens(strings.NewReader(bearerFile(map[string]string{shopToken: shopID, adminToken: adminID})))
	if err != nil {
		t.Fatal(err)
	}
	addr := servertest.Start(t, cs, server.Options{TLS: p.serverTLS(t, false), Auth: &server.Auth{Tokens: tokens, Policy: mustPolicy(t, testPolicy)}})
	conn := dial(t, addr, clientCreds(p.ca.Pool()))
	orders := orderv1.NewOrderServiceClient(conn)
	products := orderv1.NewProductServiceClient(conn)
	with := func(header string) context.Context {
		if header == "" {
			return context.Background()
		}
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", header)
	}

	var first *status.Status
	for _, header := range []string{"", "Bearer not-a-known-token", "Basic " + shopToken, "Bearer", "Bearer " + shopToken + "x"} {
		_, err := orders.IssueToken(with(header), &orderv1.IssueTokenRequest{CustomerId: "alice"})
		wantError(t, err, codes.Unauthenticated, "UNAUTHENTICATED")
		if first == nil {
			first = status.Convert(err)
		} else if d := cmp.Diff(first.Proto(), status.Convert(err).Proto(), protocmp.Transform()); d != "" {
			t.Errorf("authorization %q answers differently from none (-none +this):\n%s", header, d)
		}
	}
	if n := cs.calls.Load(); n != 0 {
		t.Errorf("%d unauthenticated calls reached the store, want 0", n)
	}

	if _, err := orders.IssueToken(with("Bearer "+shopToken), &orderv1.IssueTokenRequest{CustomerId: "alice"}); err != nil {
		t.Errorf("IssueToken with the shop's token: %v", err)
	}
	if _, err := orders.IssueToken(with("bearer "+shopToken), &orderv1.IssueTokenRequest{CustomerId: "alice"}); err != nil {
		t.Errorf("IssueToken with a lower-case scheme: %v", err)
	}
	_, err = products.PutProduct(with("Bearer "+shopToken), &orderv1.PutProductRequest{Product: &orderv1.Product{Sku: "a", Name: "A", UnitPriceMinor: 1, Currency: "EUR", Stock: 1}})
	wantError(t, err, codes.PermissionDenied, "PERMISSION_DENIED")
	if _, err := products.PutProduct(with("Bearer "+adminToken), &orderv1.PutProductRequest{Product: &orderv1.Product{Sku: "a", Name: "A", UnitPriceMinor: 1, Currency: "EUR", Stock: 1}}); err != nil {
		t.Errorf("PutProduct with the admin's token: %v", err)
	}

	t.Run("health and reflection need no identity", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "order.v1.OrderService"})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health: %v, %v; want SERVING", resp, err)
		}
		services, err := listServices(conn)
		if err != nil || !contains(services, "order.v1.OrderService") {
			t.Errorf("reflection: %v, %v; want order.v1.OrderService listed", services, err)
		}
	})
}

// TestBearerTokensOnLoopbackPlaintext: Auth works without TLS too (for
// local use; orderd refuses bearer tokens in plaintext off loopback).
func TestBearerTokensOnLoopbackPlaintext(t *testing.T) {
	st, _ := storetest.New(t, store.Options{})
	tokens, err := server.ParseBearerTokens(strings.NewReader(bearerFile(map[string]string{"tok-1": "ci"})))
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, servertest.Start(t, st, server.Options{Auth: &server.Auth{Tokens: tokens}}), insecure.NewCredentials())
	orders := orderv1.NewOrderServiceClient(conn)
	_, err = orders.IssueToken(context.Background(), &orderv1.IssueTokenRequest{CustomerId: "alice"})
	wantError(t, err, codes.Unauthenticated, "UNAUTHENTICATED")
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer tok-1")
	if _, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"}); err != nil {
		t.Errorf("with the token (no policy: any identity may call anything): %v", err)
	}
}

func TestReflectionCanBeDisabled(t *testing.T) {
	st, _ := storetest.New(t, store.Options{})
	conn := dial(t, servertest.Start(t, st, server.Options{DisableReflection: true}), insecure.NewCredentials())
	if _, err := listServices(conn); status.Code(err) != codes.Unimplemented {
		t.Errorf("reflection: %v, want UNIMPLEMENTED", err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health: %v", err)
	}
}

func TestPolicyMustNameRealMethods(t *testing.T) {
	st, _ := storetest.New(t, store.Options{})
	pol := mustPolicy(t, `{"rules": [{"identity": "x", "methods": ["/order.v1.OrderService/PlaceOrdr", "/order.v1.OrderService/*"]}]}`)
	_, err := server.New(st, server.Options{Auth: &server.Auth{Policy: pol}})
	if err == nil || !strings.Contains(err.Error(), "PlaceOrdr") {
		t.Errorf("server.New with a misspelt method: %v, want an error naming it", err)
	}
}

func TestParsePolicy(t *testing.T) {
	p := mustPolicy(t, testPolicy)
	allowed := []struct {
		id, method string
		want       bool
	}{
		{adminID, "/order.v1.ProductService/PutProduct", true},
		{shopID, "/order.v1.ProductService/PutProduct", false},
		{shopID, "/order.v1.OrderService/PlaceOrder", true},
		{shopID, "/order.v1.ProductService/GetProduct", true},
		{auditorID, "/order.v1.OrderService/GetToken", true},
		{auditorID, "/order.v1.OrderService/PlaceOrder", false},
		{"spiffe://orderd.local/admin/evil", "/order.v1.ProductService/PutProduct", false},
		{"", "/order.v1.OrderService/GetOrder", false},
	}
	for _, c := range allowed {
		if got := p.Allows(c.id, c.method); got != c.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", c.id, c.method, got, c.want)
		}
	}
	wild := mustPolicy(t, `{"rules": [{"identity": "spiffe://orderd.local/*", "methods": ["/order.v1.*/Get*"]}]}`)
	if !wild.Allows("spiffe://orderd.local/x", "/order.v1.ProductService/GetProduct") || wild.Allows("spiffe://other/x", "/order.v1.ProductService/GetProduct") {
		t.Error("identity and method wildcards do not match as documented")
	}
	bad := map[string]string{
		"not JSON":          `{"rules": [`,
		"unknown field":     `{"rules": [{"identity": "a", "methods": ["*"], "role": "x"}]}`,
		"no rules":          `{"rules": []}`,
		"no identity":       `{"rules": [{"methods": ["*"]}]}`,
		"no methods":        `{"rules": [{"identity": "a"}]}`,
		"relative method":   `{"rules": [{"identity": "a", "methods": ["order.v1.OrderService/PlaceOrder"]}]}`,
		"trailing data":     `{"rules": [{"identity": "a", "methods": ["*"]}]} {}`,
		"rules not a list":  `{"rules": {"identity": "a"}}`,
		"methods not list":  `{"rules": [{"identity": "a", "methods": "*"}]}`,
		"top-level unknown": `{"rule": []}`,
	}
	for name, s := range bad {
		if _, err := server.ParsePolicy([]byte(s)); err == nil {
			t.Errorf("%s: ParsePolicy(%s) succeeded, want an error", name, s)
		}
	}
}

func TestParseBearerTokens(t *testing.T) {
	const h = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" // sha256("test")
	good := "# comment\n\n" + h + "  ci-runner\n"
	if _, err := server.ParseBearerTokens(strings.NewReader(good)); err != nil {
		t.Errorf("ParseBearerTokens: %v", err)
	}
	bad := map[string]string{
		"empty":            "# nothing\n",
		"short hash":       "abcd ci\n",
		"not hex":          strings.Repeat("z", 64) + " ci\n",
		"no identity":      h + "\n",
		"three fields":     h + " ci runner\n",
		"duplicate hashes": h + " a\n" + h + " b\n",
	}
	for name, s := range bad {
		if _, err := server.ParseBearerTokens(strings.NewReader(s)); err == nil {
			t.Errorf("%s: succeeded, want an error", name)
		} else if strings.Contains(err.Error(), h) {
			t.Errorf("%s: error %q repeats the file's hash", name, err)
		}
	}
}

// listServices asks server reflection for the services.
func listServices(conn *grpc.ClientConn) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	// Send reports io.EOF when the server has ended the stream; Recv then
	// returns its status.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}
