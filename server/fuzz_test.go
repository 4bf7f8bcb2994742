package server_test

// Fuzz tests of request handling end to end: the production server
// (server.New, every interceptor) over a real database (storetest). `go
// test` runs the seeds (f.Add and testdata/fuzz/<Name>/); `make fuzz` runs
// each target for FUZZTIME. Each fuzzing worker process sets up its own
// server and database.

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server"
)

// hostile are strings that have broken servers before.
var hostile = []string{
	"", "alice", "' OR '1'='1", "alice'; DROP TABLE tokens; --", `\`, `\'`, "%", "_", "a%_\\",
	"\x00", "alice\x00bob", "😀😀😀", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\u202eevil", "ｆｕｌｌｗｉｄｔｈ", "İ", "ß",
	strings.Repeat("x", 64), strings.Repeat("x", 65), strings.Repeat("😀", 64), strings.Repeat("y", 70000),
	"otk_", "otk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "null", "NULL", "0x00", "-1", "1e309",
}

// fuzzOK are the codes a request may get (RESOURCE_EXHAUSTED is checked
// separately: only for oversize requests and the IssueToken limits).
var fuzzOK = map[codes.Code]bool{codes.OK: true, codes.InvalidArgument: true, codes.NotFound: true, codes.FailedPrecondition: true}

// checkAnswer fails unless err is success or a documented, well-formed
// rejection: an allowed code with ErrorInfo in orderd's domain.
func checkAnswer(t *testing.T, what string, req proto.Message, err error, also ...codes.Code) *status.Status {
	t.Helper()
	st := status.Convert(err)
	if st.Code() == codes.ResourceExhausted && proto.Size(req) > 1<<20 {
		return st // oversize: refused by grpc before any handler
	}
	allowed := fuzzOK[st.Code()]
	for _, c := range also {
		allowed = allowed || st.Code() == c
	}
	if !allowed {
		t.Fatalf("%s: %v %q, want one of OK, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION %v", what, st.Code(), st.Message(), also)
	}
	if err != nil {
		var info *errdetails.ErrorInfo
		for _, d := range st.Details() {
			if i, ok := d.(*errdetails.ErrorInfo); ok {
				info = i
			}
		}
		if info == nil || info.GetDomain() != server.ErrorDomain || info.GetReason() == "" {
			t.Fatalf("%s: %v without ErrorInfo in domain %s", what, st, server.ErrorDomain)
		}
	}
	return st
}

func reason(st *status.Status) string {
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			return i.GetReason()
		}
	}
	return ""
}

// tokenState is GetToken's state of token for customer, or an error.
func (e *env) tokenState(t *testing.T, token, customer string) orderv1.TokenState {
	t.Helper()
	ts, err := e.orders.GetToken(context.Background(), &orderv1.GetTokenRequest{Token: token, CustomerId: customer})
	if err != nil {
		t.Fatalf("GetToken(%q): %v", customer, err)
	}
	return ts.GetState()
}

// sendable reports whether the generated client can marshal s (proto3
// strings must be UTF-8); FuzzRawRequest covers the rest.
func sendable(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// fuzzEnv is a server with products and a victim: a token of customer
// "victim" that no fuzzed request may consume.
func fuzzEnv(f *testing.F, opts server.Options) (*env, string) {
	e := startWith(f, opts)
	e.put(f, "apple", "EUR", 120, 1_000_000)
	e.put(f, "pear", "EUR", 80, 1_000_000)
	e.put(f, "dollar", "USD", 100, 1_000_000)
	e.put(f, "scarce", "EUR", 1, 0)
	return e, e.token(f, "victim")
}

// FuzzPlaceOrder sends PlaceOrder with a fuzzed token (mode 0), a fresh
// token of the fuzzed customer (mode 1), or the victim's token (mode 2).
// A rejected call consumes nothing but on OUT_OF_STOCK, which is
// documented to consume the token; the victim's token always survives.
func FuzzPlaceOrder(f *testing.F) {
	e, victim := fuzzEnv(f, server.Options{})
	for i, h := range hostile {
		f.Add(uint8(i%3), h, "alice", "apple", int64(1), "", int64(0))
		f.Add(uint8(i%3), "otk_x", h, "apple", int64(1), "pear", int64(2))
		f.Add(uint8(1), "", "alice", h, int64(1), "apple", int64(1))
	}
	f.Add(uint8(1), "", "alice", "scarce", int64(5), "", int64(0))
	f.Add(uint8(1), "", "alice", "apple", int64(1), "dollar", int64(1))
	f.Add(uint8(1), "", "alice", "apple", int64(1<<62), "pear", int64(1<<62))
	f.Add(uint8(1), "", "alice", "apple", int64(-1), "", int64(0))
	f.Add(uint8(2), "", "mallory", "apple", int64(1), "", int64(0))
	f.Add(uint8(1), "", "alice", "apple", int64(1), "apple", int64(1))
	f.Fuzz(func(t *testing.T, mode uint8, token, customer, sku string, qty int64, sku2 string, qty2 int64) {
		if !sendable(token, customer, sku, sku2) {
			return
		}
		ctx := context.Background()
		fresh := false
		switch mode % 3 {
		case 1:
			if r, err := e.orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: customer}); err == nil {
				token, fresh = r.GetToken(), true
			}
		case 2:
			if customer == "victim" {
				return
			}
			token = victim
		}
		it := []*orderv1.LineItem{{Sku: sku, Quantity: qty}}
		if sku2 != "" {
			it = append(it, &orderv1.LineItem{Sku: sku2, Quantity: qty2})
		}
		req := &orderv1.PlaceOrderRequest{Token: token, CustomerId: customer, Items: it}
		resp, err := e.orders.PlaceOrder(ctx, req)
		st := checkAnswer(t, "PlaceOrder", req, err)
		switch {
		case err == nil:
			if resp.GetOrder().GetCustomerId() != customer {
				t.Fatalf("placed an order for %q, asked for %q", resp.GetOrder().GetCustomerId(), customer)
			}
		case fresh && reason(st) != "OUT_OF_STOCK":
			if s := e.tokenState(t, token, customer); s != orderv1.TokenState_TOKEN_STATE_ISSUED {
				t.Fatalf("rejected %s (%v) but the token is now %v", reason(st), st.Message(), s)
			}
		}
		if s := e.tokenState(t, victim, "victim"); s != orderv1.TokenState_TOKEN_STATE_ISSUED {
			t.Fatalf("the victim's token is %v after a fuzzed PlaceOrder", s)
		}
	})
}

// FuzzIssueToken issues tokens for fuzzed customers under tight limits:
// OK with a usable token, INVALID_ARGUMENT, or RESOURCE_EXHAUSTED with
// RetryInfo.
func FuzzIssueToken(f *testing.F) {
	e, victim := fuzzEnv(f, server.Options{IssueTokenRate: 100, IssueTokenBurst: 5, MaxOutstandingTokens: 3})
	for _, h := range hostile {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, customer string) {
		if !sendable(customer) {
			return
		}
		req := &orderv1.IssueTokenRequest{CustomerId: customer}
		resp, err := e.orders.IssueToken(context.Background(), req)
		st := checkAnswer(t, "IssueToken", req, err, codes.ResourceExhausted)
		switch {
		case st.Code() == codes.ResourceExhausted && proto.Size(req) <= 1<<20:
			var delay time.Duration
			for _, d := range st.Details() {
				if ri, ok := d.(*errdetails.RetryInfo); ok {
					delay = ri.GetRetryDelay().AsDuration()
				}
			}
			if r := reason(st); delay <= 0 || (r != "TOKEN_RATE_LIMITED" && r != "TOO_MANY_OUTSTANDING_TOKENS") {
				t.Fatalf("RESOURCE_EXHAUSTED %s with retry delay %v", r, delay)
			}
		case err == nil:
			if !strings.HasPrefix(resp.GetToken(), "otk_") {
				t.Fatalf("token %q", resp.GetToken())
			}
			if s := e.tokenState(t, resp.GetToken(), customer); s != orderv1.TokenState_TOKEN_STATE_ISSUED {
				t.Fatalf("a new token is %v", s)
			}
		}
		if customer != "victim" {
			if s := e.tokenState(t, victim, "victim"); s != orderv1.TokenState_TOKEN_STATE_ISSUED {
				t.Fatalf("the victim's token is %v", s)
			}
		}
	})
}

// FuzzListOrders lists with fuzzed customers, page sizes and page tokens,
// and with alice's genuine page token changed in one byte (tamper ≥ 0). A
// changed token is INVALID_PAGE_TOKEN; no answer ever holds another
// customer's order.
func FuzzListOrders(f *testing.F) {
	e, _ := fuzzEnv(f, server.Options{})
	ctx := context.Background()
	for _, c := range []string{"alice", "alice", "alice", "bob", "bob"} {
		if _, _, err := e.place(ctx, e.token(f, c), c, items("apple", 1)); err != nil {
			f.Fatal(err)
		}
	}
	first, err := e.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: "alice", PageSize: 1})
	if err != nil {
		f.Fatal(err)
	}
	genuine := first.GetNextPageToken()
	raw, err := base64.RawURLEncoding.DecodeString(genuine)
	if err != nil {
		f.Fatal(err)
	}
	for i, h := range hostile {
		f.Add(h, int32(i), h, int32(-1), uint8(0))
		f.Add("alice", int32(1), "", int32(i), uint8(1<<(i%8)))
	}
	f.Add("alice", int32(0), "", int32(-1), uint8(0))
	f.Add("bob", int32(1), "", int32(3), uint8(0)) // alice's genuine token, for bob
	f.Add("alice", int32(-5), "", int32(-1), uint8(0))
	f.Add("alice", int32(1<<30), "", int32(-1), uint8(0))
	f.Add("alice", int32(2), "eyJjIjoiQUFBQUFBQUFBQUE9IiwidCI6MCwiaSI6IngifQ", int32(-1), uint8(0)) // the old JSON format
	f.Fuzz(func(t *testing.T, customer string, size int32, pageToken string, tamper int32, flip uint8) {
		if !sendable(customer, pageToken) {
			return
		}
		if tamper >= 0 {
			m := append([]byte(nil), raw...)
			m[int(tamper)%len(m)] ^= flip
			pageToken = base64.RawURLEncoding.EncodeToString(m)
		}
		req := &orderv1.ListOrdersRequest{CustomerId: customer, PageSize: size, PageToken: pageToken}
		resp, err := e.orders.ListOrders(ctx, req)
		st := checkAnswer(t, "ListOrders", req, err)
		for _, o := range resp.GetOrders() {
			if o.GetCustomerId() != customer {
				t.Fatalf("listing %q returned an order of %q", customer, o.GetCustomerId())
			}
		}
		if err == nil && pageToken != "" && (pageToken != genuine || customer != "alice") {
			t.Fatalf("page token %q accepted for %q; only alice's genuine one may be", pageToken, customer)
		}
		if st.Code() != codes.OK && st.Code() != codes.InvalidArgument {
			t.Fatalf("ListOrders: %v", st)
		}
	})
}

// FuzzGetToken asks for fuzzed tokens (mode 0) and for alice's tokens,
// unused, used and expired (modes 1-3), as a fuzzed customer: a foreign
// token must get exactly the answer of a token never issued.
func FuzzGetToken(f *testing.F) {
	e, _ := fuzzEnv(f, server.Options{})
	ctx := context.Background()
	expired := e.token(f, "alice")
	e.clock.Advance(2 * time.Hour)
	unused := e.token(f, "alice")
	used := e.token(f, "alice")
	if _, _, err := e.place(ctx, used, "alice", items("apple", 1)); err != nil {
		f.Fatal(err)
	}
	foreign := []string{"", unused, used, expired}
	for i, h := range hostile {
		f.Add(h, "bob", uint8(0))
		f.Add("otk_x", h, uint8(i%4))
	}
	f.Fuzz(func(t *testing.T, token, customer string, mode uint8) {
		if !sendable(token, customer) {
			return
		}
		if m := mode % 4; m != 0 {
			if customer == "alice" {
				return
			}
			token = foreign[m]
		}
		req := &orderv1.GetTokenRequest{Token: token, CustomerId: customer}
		_, err := e.orders.GetToken(ctx, req)
		st := checkAnswer(t, "GetToken", req, err)
		if mode%4 != 0 {
			_, rerr := e.orders.GetToken(ctx, &orderv1.GetTokenRequest{Token: "otk_neverissuedneverissuedneverissu", CustomerId: customer})
			if !proto.Equal(status.Convert(rerr).Proto(), st.Proto()) {
				t.Fatalf("alice's token as %q: %v; a random token: %v", customer, st, status.Convert(rerr))
			}
		}
	})
}

// rawCodec sends and receives bytes as they are, so that FuzzRawRequest
// can send what no generated client would: truncated messages, wrong wire
// types, strings that are not UTF-8.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

var rawMethods = []string{
	orderv1.OrderService_IssueToken_FullMethodName,
	orderv1.OrderService_PlaceOrder_FullMethodName,
	orderv1.OrderService_GetOrder_FullMethodName,
	orderv1.OrderService_ListOrders_FullMethodName,
	orderv1.OrderService_GetToken_FullMethodName,
	orderv1.ProductService_GetProduct_FullMethodName,
	orderv1.ProductService_PutProduct_FullMethodName,
}

// FuzzRawRequest sends arbitrary bytes as the request of every method.
// Bytes that are not a message of the method's type are INVALID_ARGUMENT
// MALFORMED_REQUEST (grpc-go alone would answer INTERNAL), never INTERNAL.
func FuzzRawRequest(f *testing.F) {
	e, victim := fuzzEnv(f, server.Options{})
	conn := dial(f, e.addr, insecure.NewCredentials())
	seeds := []proto.Message{
		&orderv1.IssueTokenRequest{CustomerId: "alice"},
		&orderv1.PlaceOrderRequest{Token: victim, CustomerId: "mallory", Items: items("apple", 1)},
		&orderv1.GetOrderRequest{Id: "x"},
		&orderv1.ListOrdersRequest{CustomerId: "alice", PageSize: 3},
		&orderv1.GetTokenRequest{Token: victim, CustomerId: "mallory"},
		&orderv1.GetProductRequest{Sku: "apple"},
		&orderv1.PutProductRequest{Product: &orderv1.Product{Sku: "kiwi", Name: "Kiwi", UnitPriceMinor: 1, Currency: "EUR", Stock: 1}},
	}
	for i, m := range seeds {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
		f.Add(uint8(i), b[:len(b)/2])
	}
	f.Add(uint8(0), []byte{0x0a, 0x03, 0xff, 0xfe, 0xfd})       // customer_id: not UTF-8
	f.Add(uint8(1), []byte{0x0a, 0x02, 0xc3, 0x28, 0x12, 0x00}) // token: not UTF-8
	f.Add(uint8(3), []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add(uint8(1), []byte{0x1a, 0x80, 0x80, 0x80, 0x80, 0x10}) // items: length beyond the message
	f.Add(uint8(6), []byte{0x0f})                               // end-group without a group
	f.Fuzz(func(t *testing.T, method uint8, body []byte) {
		m := rawMethods[int(method)%len(rawMethods)]
		var out []byte
		err := conn.Invoke(context.Background(), m, &body, &out, grpc.ForceCodecV2(rawCodec{}))
		st := status.Convert(err)
		switch {
		case st.Code() == codes.ResourceExhausted && len(body) > 1<<20:
		case !fuzzOK[st.Code()]:
			t.Fatalf("%s with %x: %v %q", m, body, st.Code(), st.Message())
		}
		if s := e.tokenState(t, victim, "victim"); s != orderv1.TokenState_TOKEN_STATE_ISSUED {
			t.Fatalf("the victim's token is %v after raw %s", s, m)
		}
	})
}
