package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// tokenPrefix marks orderd tokens so that secret scanners and people can
// recognise one in a log or a paste.
const tokenPrefix = "otk_"

// newToken returns a token with 192 random bits in URL-safe text.
func newToken() string {
	var b [24]byte
	rand.Read(b[:])
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// HashToken returns the SHA-256 of a token: the only form in which tokens
// are stored, compared and (abbreviated) logged.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// ErrTooManyTokens: the customer already holds the most unused, unexpired
// tokens allowed (IssueTokenCapped); nothing was issued.
var ErrTooManyTokens = errors.New("too many outstanding tokens")

const (
	insertToken = `INSERT INTO tokens (token_hash, customer_id, issue_time, expire_time) VALUES (?, ?, ?, ?)`

	// insertTokenCapped inserts the token only while the customer holds
	// fewer than the cap of unused, unexpired tokens: the check is part of
	// the INSERT, so no caller can get past it by skipping a step. The
	// derived table's LIMIT bounds the index range read (tokens_customer) to
	// the cap however many tokens a customer holds.
	//
	// It can overshoot under concurrency, by at most one token per
	// concurrent call minus one: under READ COMMITTED the SELECT of an
	// INSERT … SELECT is a consistent, non-locking read, so N calls for one
	// customer running at the same instant may all count cap-1 and all
	// insert, leaving cap+N-1 tokens. N is small in practice: each replica's
	// per-customer IssueToken rate limiter lets at most its burst through at
	// once. Later calls count every committed token and fail until tokens
	// are used or expire, so the overshoot never compounds.
	insertTokenCapped = `INSERT INTO tokens (token_hash, customer_id, issue_time, expire_time)
SELECT ?, ?, ?, ? FROM DUAL
WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM tokens WHERE customer_id = ? AND expire_time > ? LIMIT ?) AS outstanding) < ?`
)

// IssueToken creates a single-use token for a customer, valid for the
// configured TTL. It returns ErrUnavailable when the database is unreachable.
func (s *Store) IssueToken(ctx context.Context, customerID string) (IssuedToken, error) {
	return s.IssueTokenCapped(ctx, customerID, 0)
}

// IssueTokenCapped is IssueToken for a customer who may hold at most
// maxOutstanding unused, unexpired tokens (0: no cap). Over the cap it
// returns ErrTooManyTokens, as a *DetailError with the cap as metadata
// "max_outstanding"; concurrent calls can overshoot the cap slightly (see
// insertTokenCapped). It returns ErrUnavailable when the database is
// unreachable.
func (s *Store) IssueTokenCapped(ctx context.Context, customerID string, maxOutstanding int) (IssuedToken, error) {
	if maxOutstanding < 0 {
		return IssuedToken{}, fmt.Errorf("%w: negative token cap", ErrInvalidRequest)
	}
	now := s.opts.Now().UTC().Truncate(time.Microsecond)
	t := IssuedToken{Token: newToken(), ExpireTime: now.Add(s.opts.TokenTTL)}
	h := HashToken(t.Token)
	if maxOutstanding == 0 {
		if _, err := s.db.ExecContext(ctx, insertToken, h, customerID, now, t.ExpireTime); err != nil {
			return IssuedToken{}, fmt.Errorf("insert token: %w", classify(ctx, err))
		}
		return t, nil
	}
	res, err := s.db.ExecContext(ctx, insertTokenCapped, h, customerID, now, t.ExpireTime, customerID, now, maxOutstanding, maxOutstanding)
	if err != nil {
		return IssuedToken{}, fmt.Errorf("insert token: %w", classify(ctx, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return IssuedToken{}, fmt.Errorf("insert token: %w", classify(ctx, err))
	}
	if n == 0 {
		return IssuedToken{}, withDetail(ErrTooManyTokens, "max_outstanding", strconv.Itoa(maxOutstanding))
	}
	return t, nil
}

// getTokenState reads, in one round trip, the unused token row and the
// stored outcome for a token hash and customer. Another customer's token
// reads as absent.
const getTokenState = `
SELECT 'token', expire_time, NULL, NULL, NULL FROM tokens WHERE token_hash = ? AND customer_id = ?
UNION ALL
SELECT 'outcome', NULL, order_id, rejection, create_time FROM outcomes WHERE token_hash = ? AND customer_id = ?`

// GetToken tells what became of a token. It returns ErrTokenNotFound for
// tokens never issued, issued to another customer, or purged.
func (s *Store) GetToken(ctx context.Context, token, customerID string) (TokenStatus, error) {
	h := HashToken(token)
	rows, err := s.db.QueryContext(ctx, getTokenState, h, customerID, h, customerID)
	if err != nil {
		return TokenStatus{}, fmt.Errorf("get token: %w", classify(ctx, err))
	}
	defer rows.Close()
	var st TokenStatus
	for rows.Next() {
		var (
			kind          string
			expire, ctime sql.NullTime
			orderID, rej  sql.NullString
		)
		if err := rows.Scan(&kind, &expire, &orderID, &rej, &ctime); err != nil {
			return TokenStatus{}, fmt.Errorf("scan token: %w", classify(ctx, err))
		}
		switch kind {
		case "outcome":
			// An outcome wins over a token row: consumed is final.
			st = TokenStatus{State: TokenConsumed, OrderID: orderID.String, ConsumeTime: ctime.Time}
			if rej.Valid {
				st.Rejection = storedRejections[rej.String]
			}
		case "token":
			if st.State == TokenConsumed {
				continue
			}
			st = TokenStatus{State: TokenIssued, ExpireTime: expire.Time}
			if !s.opts.Now().Before(expire.Time) {
				st.State = TokenExpired
			}
		}
	}
	if err := rows.Err(); err != nil {
		return TokenStatus{}, fmt.Errorf("read token: %w", classify(ctx, err))
	}
	if st.State == 0 {
		return TokenStatus{}, ErrTokenNotFound
	}
	return st, nil
}

// pageTokenKeyName names the HMAC key of ListOrders page tokens in the
// secrets table.
const pageTokenKeyName = "page_token_hmac_sha256"

const (
	selectSecret = `SELECT value FROM secrets WHERE name = ?`
	insertSecret = `INSERT IGNORE INTO secrets (name, value, create_time) VALUES (?, ?, ?)`
)

// PageTokenKey returns the 32-byte key with which every replica signs and
// verifies ListOrders page tokens. The first call on a database creates it
// from crypto/rand; when replicas race, INSERT IGNORE keeps the first and
// all read that one. It returns ErrUnavailable when the database is
// unreachable.
func (s *Store) PageTokenKey(ctx context.Context) ([]byte, error) {
	key, err := s.readSecret(ctx, pageTokenKeyName)
	if err == nil || !errNoRows(err) {
		return key, err
	}
	fresh := make([]byte, 32)
	rand.Read(fresh)
	if _, err := s.db.ExecContext(ctx, insertSecret, pageTokenKeyName, fresh, s.opts.Now().UTC()); err != nil {
		return nil, fmt.Errorf("create page token key: %w", classify(ctx, err))
	}
	key, err = s.readSecret(ctx, pageTokenKeyName)
	if errNoRows(err) {
		return nil, errors.New("page token key: not found after INSERT IGNORE")
	}
	return key, err
}

// readSecret returns a secret's value; the error wraps sql.ErrNoRows when
// there is none yet.
func (s *Store) readSecret(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	err := s.db.QueryRowContext(ctx, selectSecret, name).Scan(&v)
	switch {
	case errNoRows(err):
		return nil, fmt.Errorf("read secret %s: %w", name, err)
	case err != nil:
		return nil, fmt.Errorf("read secret %s: %w", name, classify(ctx, err))
	}
	return v, nil
}

// errNoRows reports whether err is sql.ErrNoRows.
func errNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
