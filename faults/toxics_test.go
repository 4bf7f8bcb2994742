package faults

import (
	"bytes"
	"sync/atomic"
	"time"

	"github.com/Shopify/toxiproxy/v2/toxics"
)

// Custom toxics. Toxiproxy's own toxics act on time and byte counts; these
// act on protocol events. One toxic value is shared by every connection of
// its proxy, so "fired" makes each one-shot across connections.
func init() {
	toxics.Register("mysql_commit_cut", new(commitCutToxic))
	toxics.Register("swallow_then_reset", new(swallowToxic))
}

// commitCutToxic sits on the upstream (orderd → MySQL) stream and cuts the
// first connection that sends COMMIT: before it reaches the server (the
// transaction rolls back), or right after it was forwarded (the server
// commits; the acknowledgement never reaches orderd, whose connection is
// closed before the server can answer).
type commitCutToxic struct {
	After bool `json:"after"`
	fired atomic.Bool
}

// isCommitPacket reports whether a chunk is one whole MySQL COM_QUERY
// packet (3-byte payload length, sequence number, command 0x03) whose text
// ends with COMMIT: a bare COMMIT, or orderd's writes with the COMMIT
// appended ("…; COMMIT", one round trip).
func isCommitPacket(b []byte) bool {
	return len(b) > 5 && int(b[0])|int(b[1])<<8|int(b[2])<<16 == len(b)-4 && b[4] == 0x03 && bytes.HasSuffix(b, []byte("COMMIT"))
}

func (t *commitCutToxic) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			if isCommitPacket(c.Data) && t.fired.CompareAndSwap(false, true) {
				if t.After {
					stub.Output <- c
				}
				stub.Close()
				return
			}
			stub.Output <- c
		}
	}
}

// swallowToxic sits on the downstream (orderd → client) stream: once, from
// the first chunk on, it drops everything for HoldMS, then resets the
// connection. The server finishes the call (and commits) but its reply is
// lost, as when a network path dies after the server answered.
type swallowToxic struct {
	HoldMS int64 `json:"hold_ms"`
	fired  atomic.Bool
}

func (t *swallowToxic) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			if !t.fired.CompareAndSwap(false, true) {
				stub.Output <- c
				continue
			}
			t.swallow(stub)
			return
		}
	}
}

func (t *swallowToxic) swallow(stub *toxics.ToxicStub) {
	deadline := time.After(time.Duration(t.HoldMS) * time.Millisecond)
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			_ = c // dropped
		case <-deadline:
			stub.Close()
			return
		}
	}
}
