package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// Domain errors. The server maps each to one gRPC status (server/errors.go);
// callers test for them with errors.Is.
var (
	// ErrNotFound: something asked for does not exist. ErrOrderNotFound and
	// ErrProductNotFound say what; both match ErrNotFound with errors.Is.
	ErrNotFound = errors.New("not found")
	// ErrOrderNotFound: no order has the id.
	ErrOrderNotFound = fmt.Errorf("order %w", ErrNotFound)
	// ErrProductNotFound: no product has the SKU (also when an item of
	// PlaceOrder names it; then nothing is changed).
	ErrProductNotFound = fmt.Errorf("product %w", ErrNotFound)
	// ErrTokenNotFound: the token was never issued, was issued to another
	// customer, or was purged. Deliberately one error for all three.
	ErrTokenNotFound = errors.New("token not found")
	// ErrTokenExpired: the token is unused and past its expiry.
	ErrTokenExpired = errors.New("token expired")
	// ErrTokenReused: the token was consumed by a request with other items.
	ErrTokenReused = errors.New("token reused with a different request")
	// ErrCurrencyMismatch: the items are priced in different currencies.
	ErrCurrencyMismatch = errors.New("items priced in different currencies")
	// ErrInvalidRequest: the request breaks a rule the API also enforces
	// (items present, quantities positive, each SKU once, page size and
	// batch positive); checked here too so no caller can bypass it.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrAmountOverflow: the order total does not fit in 64 bits.
	ErrAmountOverflow = errors.New("order total too large")
	// ErrOutOfStock: an item asks for more than the stock. It is a stored
	// rejection: it consumes the token and is replayed.
	ErrOutOfStock = errors.New("out of stock")
	// ErrContention: lock waits or deadlocks outlasted the retry budget;
	// nothing was changed and the call can be retried.
	ErrContention = errors.New("database contention")
	// ErrUnavailable: the database could not be reached or the connection
	// was lost. If it was lost during COMMIT the outcome is unknown, and a
	// retry with the same token either places the order or replays it.
	ErrUnavailable = errors.New("database unavailable")
)

// storedRejections are the rejections that consume a token and are kept as
// its outcome, by the code under which they are stored.
var storedRejections = map[string]error{
	"out_of_stock": ErrOutOfStock,
}

func rejectionCode(err error) string {
	for code, e := range storedRejections {
		if errors.Is(err, e) {
			return code
		}
	}
	return ""
}

// DetailError is a domain error with metadata for the caller, such as the
// SKU that is out of stock.
type DetailError struct {
	Err      error
	Metadata map[string]string
}

// Error implements error.
func (e *DetailError) Error() string {
	keys := make([]string, 0, len(e.Metadata))
	for k := range e.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(e.Err.Error())
	for i, k := range keys {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%s", k, e.Metadata[k])
	}
	return b.String()
}

// Unwrap returns the domain error.
func (e *DetailError) Unwrap() error { return e.Err }

// withDetail attaches metadata given as key, value pairs.
func withDetail(err error, kv ...string) error {
	md := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	return &DetailError{Err: err, Metadata: md}
}

// MySQL error numbers the store reacts to.
const (
	erDupEntry        = 1062
	erLockWaitTimeout = 1205
	erLockDeadlock    = 1213
	erQueryInterrupt  = 1317
	erServerShutdown  = 1053
	erConnKilled      = 1927
	erUnknownDatabase = 1049
	erAccessDenied    = 1045
	erTooManyConns    = 1040
)

func mysqlErrNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// retryCause names why a transaction attempt may be retried as a whole,
// or "" when it may not.
func retryCause(err error) string {
	switch mysqlErrNumber(err) {
	case erLockDeadlock:
		return "deadlock"
	case erLockWaitTimeout:
		return "lock_wait_timeout"
	}
	return ""
}

// isConnError reports whether err means the connection to the database was
// lost or could not be made.
func isConnError(err error) bool {
	switch mysqlErrNumber(err) {
	case erServerShutdown, erConnKilled, erQueryInterrupt, erTooManyConns:
		return true
	}
	var netErr net.Error
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &netErr)
}

// classify turns driver errors into domain errors, keeping the context
// (context errors pass through so the server can answer DEADLINE_EXCEEDED
// or CANCELLED).
func classify(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// Before isConnError: DeadlineExceeded is also a net.Error.
		return err
	case ctx.Err() != nil:
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	case retryCause(err) != "":
		return fmt.Errorf("%w: %v", ErrContention, err)
	case isConnError(err):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}
