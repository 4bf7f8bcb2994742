package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/orderd/orderd/store"
)

var errInvalidPageToken = errors.New("invalid page token")

// Page tokens are opaque to clients and tamper-evident:
//
//	base64url(version || create time (int64 µs, big endian) || order id || mac)
//
// where mac is HMAC-SHA256, truncated to 128 bits, keyed with the key every
// replica reads from the database (store.PageTokenKey), over a domain
// label, the customer the token was issued for, and the content. Changing
// any byte, or presenting the token with another customer, fails the MAC:
// INVALID_PAGE_TOKEN, never someone else's orders. The key lives in the
// database rather than in a flag: replicas agree on it with no
// configuration to distribute or get wrong, and whoever can read it can
// read the orders themselves, so it protects nothing the database does
// not.
const (
	pageTokenVersion = 1
	pageTokenMACSize = 16
	pageTokenLabel   = "orderd ListOrders page token v1\x00"
	// maxPageTokenLen bounds what is decoded: a version byte, 8 bytes of
	// time, an order id (36 characters) and the MAC fit easily.
	maxPageTokenLen = 256
)

// pageTokens signs and verifies page tokens with the shared key, read from
// the store on first use and kept.
type pageTokens struct {
	store Store
	mu    sync.Mutex
	key   []byte
}

func (p *pageTokens) loadKey(ctx context.Context) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.key != nil {
		return p.key, nil
	}
	k, err := p.store.PageTokenKey(ctx)
	if err != nil {
		return nil, err
	}
	p.key = k
	return k, nil
}

func pageTokenMAC(key []byte, customerID string, content []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(pageTokenLabel))
	m.Write([]byte(customerID))
	m.Write([]byte{0})
	m.Write(content)
	return m.Sum(nil)[:pageTokenMACSize]
}

func (p *pageTokens) encode(ctx context.Context, c *store.Cursor, customerID string) (string, error) {
	key, err := p.loadKey(ctx)
	if err != nil {
		return "", err
	}
	b := make([]byte, 9, 9+len(c.ID)+pageTokenMACSize)
	b[0] = pageTokenVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(c.CreateTime.UnixMicro()))
	b = append(b, c.ID...)
	b = append(b, pageTokenMAC(key, customerID, b)...)
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// decode returns the cursor in a page token ("" → nil), or
// errInvalidPageToken. Strict decoding: two spellings of the same bytes
// are not both accepted.
func (p *pageTokens) decode(ctx context.Context, s, customerID string) (*store.Cursor, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > maxPageTokenLen {
		return nil, errInvalidPageToken
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) < 9+1+pageTokenMACSize || b[0] != pageTokenVersion {
		return nil, errInvalidPageToken
	}
	key, err := p.loadKey(ctx)
	if err != nil {
		return nil, err
	}
	content, mac := b[:len(b)-pageTokenMACSize], b[len(b)-pageTokenMACSize:]
	if !hmac.Equal(mac, pageTokenMAC(key, customerID, content)) {
		return nil, errInvalidPageToken
	}
	t := time.UnixMicro(int64(binary.BigEndian.Uint64(content[1:9]))).UTC()
	return &store.Cursor{CreateTime: t, ID: string(content[9:])}, nil
}
