package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderd/orderd/store"
)

// ErrorDomain is the ErrorInfo domain of every error orderd returns.
const ErrorDomain = "orderd"

// errorEntry is how one domain error is answered (AIP-193).
type errorEntry struct {
	err     error
	code    codes.Code
	reason  string
	message string
	// retryAfter > 0 adds google.rpc.RetryInfo: the call may be retried
	// with the same token after that delay.
	retryAfter time.Duration
}

// errInternal stands for every error the table does not know.
var errInternal = errors.New("internal error")

// Errors of the server itself (the store's are in package store).
var (
	// errUnauthenticated: the call needs an identity and carries none that
	// orderd accepts (no client certificate, no or an unknown bearer token).
	errUnauthenticated = errors.New("unauthenticated")
	// errPermissionDenied: the policy does not let the caller's identity
	// call the method.
	errPermissionDenied = errors.New("permission denied")
	// errRateLimited: the customer asked for tokens faster than the
	// per-customer rate allows.
	errRateLimited = errors.New("token issue rate exceeded")
)

// retryAfterError carries a retry delay known only when the error happens
// (when a rate limiter will have refilled). It replaces the delay of the
// RetryInfo its table entry adds; entries without RetryInfo ignore it.
type retryAfterError struct {
	err   error
	after time.Duration
}

// Error implements error.
func (e *retryAfterError) Error() string { return fmt.Sprintf("%v (retry after %v)", e.err, e.after) }

// Unwrap returns the domain error.
func (e *retryAfterError) Unwrap() error { return e.err }

// errorTable maps domain errors to gRPC statuses; the first entry that
// matches (errors.Is) wins. It is the only place that does.
var errorTable = []errorEntry{
	{store.ErrTokenNotFound, codes.NotFound, "TOKEN_NOT_FOUND", "no such order token for this customer", 0},
	{store.ErrTokenExpired, codes.FailedPrecondition, "TOKEN_EXPIRED", "the order token expired unused; issue a new one", 0},
	{store.ErrTokenReused, codes.FailedPrecondition, "TOKEN_REUSED_WITH_DIFFERENT_REQUEST", "the order token was already used for a different request", 0},
	{store.ErrOutOfStock, codes.FailedPrecondition, "OUT_OF_STOCK", "not enough stock", 0},
	{store.ErrProductNotFound, codes.NotFound, "PRODUCT_NOT_FOUND", "no such product", 0},
	{store.ErrOrderNotFound, codes.NotFound, "ORDER_NOT_FOUND", "no such order", 0},
	{store.ErrInvalidRequest, codes.InvalidArgument, "INVALID_REQUEST", "invalid request", 0},
	{errMalformedRequest, codes.InvalidArgument, "MALFORMED_REQUEST", "the request is not a valid protobuf message of the method's request type", 0},
	{store.ErrCurrencyMismatch, codes.InvalidArgument, "CURRENCY_MISMATCH", "the items are priced in different currencies", 0},
	{store.ErrAmountOverflow, codes.InvalidArgument, "AMOUNT_OVERFLOW", "the order total is too large", 0},
	{errInvalidPageToken, codes.InvalidArgument, "INVALID_PAGE_TOKEN", "page_token is not one this call returned for this customer", 0},
	{errUnauthenticated, codes.Unauthenticated, "UNAUTHENTICATED", "this call needs a client certificate from a trusted CA or a known bearer token", 0},
	{errPermissionDenied, codes.PermissionDenied, "PERMISSION_DENIED", "the caller may not call this method", 0},
	{errRateLimited, codes.ResourceExhausted, "TOKEN_RATE_LIMITED", "too many tokens requested for this customer; retry later", time.Second},
	{store.ErrTooManyTokens, codes.ResourceExhausted, "TOO_MANY_OUTSTANDING_TOKENS", "the customer holds too many unused tokens; use or let some expire, then retry", time.Second},
	{store.ErrContention, codes.Aborted, "CONTENTION", "the database was too busy to place the order; nothing changed, retry with the same token", 50 * time.Millisecond},
	{store.ErrUnavailable, codes.Unavailable, "DATABASE_UNAVAILABLE", "the database is unavailable; retry with the same token", 200 * time.Millisecond},
	{context.DeadlineExceeded, codes.DeadlineExceeded, "DEADLINE_EXCEEDED", "the deadline expired; retry with the same token", 0},
	{context.Canceled, codes.Canceled, "CANCELLED", "the call was cancelled", 0},
	{errInternal, codes.Internal, "INTERNAL", "internal error", 0},
}

func lookupError(err error) errorEntry {
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return e
		}
	}
	return errorTable[len(errorTable)-1]
}

// statusFor converts a domain error to its gRPC status with ErrorInfo (and
// RetryInfo where a retry helps). Metadata of a *store.DetailError goes into
// ErrorInfo and the message; the error's own text never reaches the client.
func statusFor(err error) *status.Status {
	e := lookupError(err)
	var md map[string]string
	var d *store.DetailError
	if errors.As(err, &d) {
		md = d.Metadata
	}
	msg := e.message
	if len(md) > 0 {
		keys := make([]string, 0, len(md))
		for k := range md {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + md[k]
		}
		msg += " (" + strings.Join(parts, ", ") + ")"
	}
	details := []proto.Message{&errdetails.ErrorInfo{Reason: e.reason, Domain: ErrorDomain, Metadata: md}}
	if e.retryAfter > 0 {
		delay := e.retryAfter
		var ra *retryAfterError
		if errors.As(err, &ra) && ra.after > 0 {
			delay = ra.after
		}
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(delay)})
	}
	return withDetails(status.New(e.code, msg), details...)
}

// pushbackTrailer is the trailer in which gRPC clients' built-in retries
// (gRFC A6: grpc-go, grpc-java, … with a service config retryPolicy) read the
// server's retry delay; they ignore google.rpc.RetryInfo.
const pushbackTrailer = "grpc-retry-pushback-ms"

// retryPushback returns the RetryInfo delay of st in milliseconds, or "".
func retryPushback(st *status.Status) string {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return fmt.Sprint(ri.GetRetryDelay().AsDuration().Milliseconds())
		}
	}
	return ""
}

// validationStatus rewrites the protovalidate interceptor's status so that
// any gRPC tool can read it: ErrorInfo{reason INVALID_REQUEST} and
// google.rpc.BadRequest field violations instead of buf.validate.Violations.
func validationStatus(st *status.Status) *status.Status {
	var vs *validate.Violations
	for _, d := range st.Details() {
		if v, ok := d.(*validate.Violations); ok {
			vs = v
		}
	}
	if vs == nil {
		return st
	}
	br := &errdetails.BadRequest{}
	for _, v := range vs.GetViolations() {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       protovalidate.FieldPathString(v.GetField()),
			Description: v.GetMessage(),
			Reason:      v.GetRuleId(),
		})
	}
	info := &errdetails.ErrorInfo{Reason: "INVALID_REQUEST", Domain: ErrorDomain,
		Metadata: map[string]string{"violations": fmt.Sprint(len(br.FieldViolations))}}
	return withDetails(status.New(codes.InvalidArgument, st.Message()), info, br)
}

func withDetails(st *status.Status, details ...proto.Message) *status.Status {
	v1 := make([]protoadapt.MessageV1, len(details))
	for i, d := range details {
		v1[i] = protoadapt.MessageV1Of(d)
	}
	ds, err := st.WithDetails(v1...)
	if err != nil {
		return st
	}
	return ds
}
