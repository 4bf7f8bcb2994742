package server

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"

	"github.com/orderd/orderd/store"
)

var errInvalidPageToken = errors.New("invalid page token")

// pageToken is the content of a ListOrders page token: the last order of the
// previous page and a hash of the customer it was issued for, so a token
// cannot be replayed against another customer's list.
type pageToken struct {
	Customer []byte `json:"c"`
	Time     int64  `json:"t"`
	ID       string `json:"i"`
}

func customerTag(customerID string) []byte {
	h := sha256.Sum256([]byte("orderd page token\x00" + customerID))
	return h[:8]
}

func encodePageToken(c *store.Cursor, customerID string) string {
	b, _ := json.Marshal(pageToken{Customer: customerTag(customerID), Time: c.CreateTime.UnixMicro(), ID: c.ID})
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePageToken returns the cursor in a page token ("" → nil), or
// errInvalidPageToken.
func decodePageToken(s, customerID string) (*store.Cursor, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errInvalidPageToken
	}
	var t pageToken
	if err := json.Unmarshal(b, &t); err != nil || string(t.Customer) != string(customerTag(customerID)) || t.ID == "" {
		return nil, errInvalidPageToken
	}
	return &store.Cursor{CreateTime: time.UnixMicro(t.Time).UTC(), ID: t.ID}, nil
}
