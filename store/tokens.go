package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
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

const insertToken = `INSERT INTO tokens (token_hash, customer_id, issue_time, expire_time) VALUES (?, ?, ?, ?)`

// IssueToken creates a single-use token for a customer, valid for the
// configured TTL. It returns ErrUnavailable when the database is unreachable.
func (s *Store) IssueToken(ctx context.Context, customerID string) (IssuedToken, error) {
	now := s.opts.Now().UTC().Truncate(time.Microsecond)
	t := IssuedToken{Token: newToken(), ExpireTime: now.Add(s.opts.TokenTTL)}
	if _, err := s.db.ExecContext(ctx, insertToken, HashToken(t.Token), customerID, now, t.ExpireTime); err != nil {
		return IssuedToken{}, fmt.Errorf("insert token: %w", classify(ctx, err))
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

// errNoRows reports whether err is sql.ErrNoRows.
func errNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
