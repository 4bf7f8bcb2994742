// Package client is the Go caller side of orderd's order.v1 API: a
// connection with one retry layer tuned for the API, PlaceOrder that keeps
// one order token across every retry, and helpers that tell a caller what an
// error means for the order.
//
// # Retries
//
// Dial wires go-grpc-middleware's retry interceptor for every unary call of
// the connection. It retries UNAVAILABLE and ABORTED, and DEADLINE_EXCEEDED
// of a single attempt (each attempt has its own timeout, see
// WithPerAttemptTimeout; the deadline of the caller's context still bounds
// the whole call, retries and waits included). The interceptor counts a
// DEADLINE_EXCEEDED or CANCELLED status while the caller's context is still
// alive as an attempt that ran out of time, so it retries a server's
// CANCELLED too. It never retries INVALID_ARGUMENT, FAILED_PRECONDITION,
// NOT_FOUND, RESOURCE_EXHAUSTED or INTERNAL. Between attempts it waits an exponential backoff with jitter,
// and at least the delay of the google.rpc.RetryInfo the server attached to
// the last error. Retries carry the attempt number in the x-retry-attempt
// request header ("1" for the first retry).
//
// Every method of the API may be retried: PlaceOrder with the same token
// replays its first outcome, PutProduct is an upsert, IssueToken at worst
// issues a token nobody uses, and the rest only read.
//
// The connection ignores service configs (grpc.WithDisableServiceConfig), so
// grpc-go's own retryPolicy never adds a second retry layer. Callers in
// other languages can use docs/service-config.json instead of this package.
//
// # Outcomes
//
// After an error, Outcome says whether the answer is definitive (Rejected:
// do not retry the same request) or unknown (the order may or may not
// exist: retry with the same token, which either places it or replays it).
// Reason gives the google.rpc.ErrorInfo reason, such as OUT_OF_STOCK.
package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
)

// Defaults of the retry options.
const (
	// DefaultMaxAttempts is how many times a call is tried in total.
	DefaultMaxAttempts = 5
	// DefaultPerAttemptTimeout bounds one attempt. It is longer than the
	// server's default lock wait (5s), which a duplicate of a PlaceOrder
	// still running may spend waiting for the first call's outcome.
	DefaultPerAttemptTimeout = 10 * time.Second
	// DefaultBackoff is the wait before the first retry; it doubles with
	// every further retry.
	DefaultBackoff = 100 * time.Millisecond
	// DefaultBackoffJitter is the fraction by which a wait is randomly
	// lengthened or shortened.
	DefaultBackoffJitter = 0.2
	// DefaultMaxBackoff caps the exponential wait (not a server's
	// RetryInfo delay, which is always honoured).
	DefaultMaxBackoff = 5 * time.Second
)

// ReplayedHeader is the response header orderd sets to "true" when
// PlaceOrder answers with the stored first outcome of a token.
const ReplayedHeader = "idempotent-replayed"

// ErrorDomain is the google.rpc.ErrorInfo domain of orderd's errors.
const ErrorDomain = "orderd"

// AttemptHeader is the request header that carries the attempt number of
// a retry ("1" for the first retry; absent on the first attempt).
const AttemptHeader = retry.AttemptMetadataKey

// RetryCodes returns the status codes a call is retried on, besides
// DEADLINE_EXCEEDED of a single attempt.
func RetryCodes() []codes.Code {
	return []codes.Code{codes.Unavailable, codes.Aborted}
}

// Option configures Dial.
type Option func(*config)

type config struct {
	creds       credentials.TransportCredentials
	maxAttempts uint
	perAttempt  time.Duration
	backoff     time.Duration
	jitter      float64
	maxBackoff  time.Duration
	onRetry     func(ctx context.Context, attempt uint, err error)
	dialOpts    []grpc.DialOption
}

// WithTransportCredentials sets the connection's transport security (for
// example credentials.NewTLS). The default is insecure (plaintext).
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(cfg *config) { cfg.creds = c }
}

// WithMaxAttempts sets how many times a call is tried in total (default
// DefaultMaxAttempts); 1 turns retries off. Values below 1 count as 1.
func WithMaxAttempts(n int) Option {
	return func(cfg *config) { cfg.maxAttempts = uint(max(n, 1)) }
}

// WithPerAttemptTimeout bounds each attempt (default
// DefaultPerAttemptTimeout); an attempt that runs out of it is retried.
// 0 removes the bound, and then DEADLINE_EXCEEDED is never retried.
func WithPerAttemptTimeout(d time.Duration) Option {
	return func(cfg *config) { cfg.perAttempt = max(d, 0) }
}

// WithBackoff sets the exponential backoff between attempts: base before
// the first retry, doubled for each further one, each wait randomly changed
// by up to jitter (a fraction, 0.2 is ±20%), never more than maxWait.
// A server's RetryInfo delay overrides a shorter wait.
func WithBackoff(base time.Duration, jitter float64, maxWait time.Duration) Option {
	return func(cfg *config) {
		cfg.backoff, cfg.jitter, cfg.maxBackoff = max(base, 0), min(max(jitter, 0), 1), max(maxWait, 0)
	}
}

// WithOnRetry calls fn before each retry with the retry's number (1 for
// the first retry) and the error of the attempt before it, for logging.
func WithOnRetry(fn func(ctx context.Context, attempt uint, err error)) Option {
	return func(cfg *config) { cfg.onRetry = fn }
}

// WithDialOptions passes extra options to grpc.NewClient, after the
// client's own. Do not add a service config with a retryPolicy: the
// connection already retries.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(cfg *config) { cfg.dialOpts = append(cfg.dialOpts, opts...) }
}

// Client is a connection to orderd. It is safe for concurrent use.
type Client struct {
	conn     *grpc.ClientConn
	orders   orderv1.OrderServiceClient
	products orderv1.ProductServiceClient
}

// Dial returns a Client for target (a grpc.NewClient target such as
// "127.0.0.1:50051" or "dns:///orderd.example:50051"). Like grpc.NewClient it
// does not connect yet: connection errors surface as UNAVAILABLE on calls,
// which are retried.
func Dial(target string, opts ...Option) (*Client, error) {
	cfg := config{
		creds:       insecure.NewCredentials(),
		maxAttempts: DefaultMaxAttempts,
		perAttempt:  DefaultPerAttemptTimeout,
		backoff:     DefaultBackoff,
		jitter:      DefaultBackoffJitter,
		maxBackoff:  DefaultMaxBackoff,
	}
	for _, o := range opts {
		o(&cfg)
	}
	retryOpts := []retry.CallOption{
		retry.WithMax(cfg.maxAttempts),
		retry.WithCodes(RetryCodes()...),
		retry.WithPerRetryTimeout(cfg.perAttempt),
		retry.WithBackoff(backoff(cfg.backoff, cfg.jitter, cfg.maxBackoff)),
	}
	if cfg.onRetry != nil {
		retryOpts = append(retryOpts, retry.WithOnRetryCallback(cfg.onRetry))
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(cfg.creds),
		// One retry layer: no service config (from the resolver, such as
		// DNS TXT records) may switch on grpc-go's own retries as well.
		grpc.WithDisableServiceConfig(),
		// Outermost first: lastErrorInterceptor gives each call a slot that
		// attemptInterceptor, which runs once per attempt inside the retry
		// loop, fills with the attempt's error for backoff to read.
		grpc.WithChainUnaryInterceptor(
			lastErrorInterceptor,
			retry.UnaryClientInterceptor(retryOpts...),
			attemptInterceptor,
		),
	}
	conn, err := grpc.NewClient(target, append(dialOpts, cfg.dialOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("orderd client for %q: %w", target, err)
	}
	return &Client{
		conn:     conn,
		orders:   orderv1.NewOrderServiceClient(conn),
		products: orderv1.NewProductServiceClient(conn),
	}, nil
}

// Orders returns the generated OrderService client on the retrying
// connection. Per call, retry.CallOption values (such as retry.WithMax(1))
// override the connection's retry options.
func (c *Client) Orders() orderv1.OrderServiceClient { return c.orders }

// Products returns the generated ProductService client on the retrying
// connection.
func (c *Client) Products() orderv1.ProductServiceClient { return c.products }

// Conn returns the underlying connection, for other services such as
// grpc.health.v1.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Item is one product and quantity to order.
type Item struct {
	SKU      string
	Quantity int64
}

// Placed is a successful PlaceOrder.
type Placed struct {
	// Order is the order, exactly as first placed with Token.
	Order *orderv1.Order
	// Replayed is true when the server answered with the outcome of an
	// earlier attempt or call with the same token: the order was placed
	// once, not again.
	Replayed bool
	// Token is the order token the order was placed with.
	Token string
}

// PlaceError is the error of PlaceOrder and PlaceOrderWithToken. It wraps
// the gRPC status error, so status.Code, Outcome and Reason see through it.
type PlaceError struct {
	// Token is the order token of the request, "" when none could be
	// issued. When Outcome is Unknown, call PlaceOrderWithToken with it and
	// the same customer and items: that places the order or replays it.
	Token string
	// Err is the error of the last attempt.
	Err error
}

// Error implements error. It leaves out the token, which is a credential.
func (e *PlaceError) Error() string { return "place order: " + e.Err.Error() }

// Unwrap returns the error of the last attempt.
func (e *PlaceError) Unwrap() error { return e.Err }

// PlaceOrder issues an order token for the customer, then places the order
// with it, using that one token for every retry: however many attempts
// reach the server, at most one order is placed. On failure the error is a
// *PlaceError carrying the token (see Outcome).
func (c *Client) PlaceOrder(ctx context.Context, customerID string, items []Item) (*Placed, error) {
	tok, err := c.orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: customerID})
	if err != nil {
		return nil, &PlaceError{Err: fmt.Errorf("issue token: %w", err)}
	}
	return c.PlaceOrderWithToken(ctx, tok.GetToken(), customerID, items)
}

// PlaceOrderWithToken places the order with a token the caller issued (and
// perhaps stored) before, retrying with it. Calling it again with the same
// token, customer and items after an Unknown outcome is safe: it returns the
// order placed by an earlier call, with Replayed set. On failure the error
// is a *PlaceError.
func (c *Client) PlaceOrderWithToken(ctx context.Context, token, customerID string, items []Item) (*Placed, error) {
	req := &orderv1.PlaceOrderRequest{Token: token, CustomerId: customerID, Items: make([]*orderv1.LineItem, len(items))}
	for i, it := range items {
		req.Items[i] = &orderv1.LineItem{Sku: it.SKU, Quantity: it.Quantity}
	}
	var hdr metadata.MD
	resp, err := c.orders.PlaceOrder(ctx, req, grpc.Header(&hdr))
	if err != nil {
		return nil, &PlaceError{Token: token, Err: err}
	}
	replayed := resp.GetReplayed()
	for _, v := range hdr.Get(ReplayedHeader) {
		replayed = replayed || v == "true"
	}
	return &Placed{Order: resp.GetOrder(), Replayed: replayed, Token: token}, nil
}

// Result is what an error means for the call that returned it.
type Result int

// Results of Outcome.
const (
	// Succeeded: no error; for PlaceOrder, the order is placed.
	Succeeded Result = iota
	// Rejected: a definitive answer. The request was not carried out and
	// the same request gets the same answer (for PlaceOrder: no order was
	// placed with this token, or the token was used for other items). Do
	// not retry it unchanged.
	Rejected
	// Unknown: the call may or may not have taken effect (the reply was
	// lost, the deadline expired, the server failed). Retrying is safe; for
	// PlaceOrder, retry with the same token (PlaceError.Token) to place
	// the order or get the first one back.
	Unknown
)

// String returns the result's name.
func (r Result) String() string {
	switch r {
	case Succeeded:
		return "succeeded"
	case Rejected:
		return "rejected"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Outcome classifies err. Codes with which a server refuses a request
// without carrying it out (INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND,
// ALREADY_EXISTS, OUT_OF_RANGE, PERMISSION_DENIED, UNAUTHENTICATED,
// UNIMPLEMENTED) are Rejected. Everything else is Unknown, including
// UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED, CANCELED, INTERNAL and
// RESOURCE_EXHAUSTED (which grpc-go also reports when a reply is too
// large to receive) and errors that carry no status: taking a placed order
// for a rejected one would invite a duplicate, so anything not known to be
// definitive is Unknown.
//
// TOKEN_NOT_FOUND is definitive only while the server keeps the token's
// outcome (orderd's --outcome-retention, 30 days by default): a retry after
// that is answered NOT_FOUND even if the token placed an order.
func Outcome(err error) Result {
	if err == nil {
		return Succeeded
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound, codes.AlreadyExists,
		codes.OutOfRange, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented:
		return Rejected
	}
	return Unknown
}

// Reason returns the reason of err's google.rpc.ErrorInfo (for example
// OUT_OF_STOCK or TOKEN_EXPIRED), preferring one of ErrorDomain, or "" when
// err carries none.
func Reason(err error) string {
	if info := errorInfo(err); info != nil {
		return info.GetReason()
	}
	return ""
}

// Metadata returns the metadata of err's google.rpc.ErrorInfo (for
// OUT_OF_STOCK: sku, requested, available), or nil.
func Metadata(err error) map[string]string {
	return errorInfo(err).GetMetadata()
}

func errorInfo(err error) *errdetails.ErrorInfo {
	if err == nil {
		return nil
	}
	var first *errdetails.ErrorInfo
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if info.GetDomain() == ErrorDomain {
				return info
			}
			if first == nil {
				first = info
			}
		}
	}
	return first
}

// RetryDelay returns the delay of err's google.rpc.RetryInfo: how long the
// server asks a caller to wait before retrying. It is 0 when err carries
// none.
func RetryDelay(err error) time.Duration {
	if err == nil {
		return 0
	}
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return max(ri.GetRetryDelay().AsDuration(), 0)
		}
	}
	return 0
}

// lastError holds the error of a call's latest attempt. The retry
// interceptor's BackoffFunc is not given the error it backs off from, so
// attemptInterceptor records it here and backoff reads it.
type lastError struct {
	mu  sync.Mutex
	err error
}

type lastErrorKey struct{}

func (l *lastError) set(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
}

func (l *lastError) get() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// lastErrorInterceptor runs once per call, outside the retry loop.
func lastErrorInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(context.WithValue(ctx, lastErrorKey{}, &lastError{}), method, req, reply, cc, opts...)
}

// attemptInterceptor runs once per attempt, inside the retry loop; the
// attempt's context derives from the call's.
func attemptInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if l, ok := ctx.Value(lastErrorKey{}).(*lastError); ok {
		l.set(err)
	}
	return err
}

// backoff is retry.BackoffExponentialWithJitter capped at maxWait, but
// never shorter than the RetryInfo delay of the attempt before.
func backoff(base time.Duration, jitter float64, maxWait time.Duration) retry.BackoffFunc {
	exp := retry.BackoffExponentialWithJitter(base, jitter)
	return func(ctx context.Context, attempt uint) time.Duration {
		var wait time.Duration
		if base > 0 {
			// Past 2^62 the exponential overflows to a negative wait.
			wait = exp(ctx, attempt)
			if wait < 0 || wait > maxWait {
				wait = maxWait
			}
		}
		if l, ok := ctx.Value(lastErrorKey{}).(*lastError); ok {
			wait = max(wait, RetryDelay(l.get()))
		}
		return wait
	}
}
