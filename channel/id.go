package channel

import (
	"crypto/rand"
	"encoding/hex"
)

// NewMessageID returns a new random message ID (128 bits, hex).
func NewMessageID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
