package lease

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/postbox-dev/postbox/channel"
)

// MaxPartitions bounds a mailbox's partition count: a consumer leases and
// reads every partition it owns, and far more partitions than worker
// processes only adds overhead.
const MaxPartitions = 4096

// DefaultPartitions is the partition count of a new mailbox when
// Options.Partitions is zero.
const DefaultPartitions = 8

// CheckPartitions checks a backend's Options.Partitions.
func CheckPartitions(backend string, n int) error {
	if n < 0 || n > MaxPartitions {
		return fmt.Errorf("%s: Options.Partitions is %d: use 1 to %d, or 0 for the default", backend, n, MaxPartitions)
	}
	return nil
}

// StoredPartitions reads the partition count a mailbox stored when it was
// created, and checks that want (Options.Partitions) is 0 or the same: a
// different count would move every address to another partition.
func StoredPartitions(stored string, want int) (int, error) {
	n, err := strconv.Atoi(stored)
	if err != nil || n <= 0 || n > MaxPartitions {
		return 0, fmt.Errorf("stored partition count %q is not a number from 1 to %d: the mailbox is damaged", stored, MaxPartitions)
	}
	if want != 0 && want != n {
		return 0, fmt.Errorf("the mailbox has %d partitions but Options.Partitions is %d: set it to %d or 0 (the count is fixed when the mailbox is created)", n, want, n)
	}
	return n, nil
}

// Options are the consumer options every leased mailbox has, as its
// ConsumerOptions spell them.
type Options struct {
	Owner     string
	LeaseTTL  time.Duration
	BatchSize int
	Buffer    int
}

// MinLeaseTTL keeps renewals (every LeaseTTL/3) from being scheduled
// faster than a busy store commits them.
const MinLeaseTTL = 100 * time.Millisecond

// WithDefaults returns o with zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	if o.Owner == "" {
		o.Owner = defaultOwner()
	}
	o.LeaseTTL = cmp.Or(o.LeaseTTL, 10*time.Second)
	o.BatchSize = cmp.Or(o.BatchSize, 256)
	o.Buffer = cmp.Or(o.Buffer, 1024)
	return o
}

// Validate checks o after WithDefaults; backend prefixes the errors.
func (o Options) Validate(backend string) error {
	if o.Owner == "" {
		return fmt.Errorf("%s: ConsumerOptions.Owner is empty: leave it unset for the default or name the consumer", backend)
	}
	if o.LeaseTTL < MinLeaseTTL {
		return fmt.Errorf("%s: ConsumerOptions.LeaseTTL is %v: use at least %v, or 0 for the default", backend, o.LeaseTTL, MinLeaseTTL)
	}
	if o.BatchSize < 0 {
		return fmt.Errorf("%s: ConsumerOptions.BatchSize is %d: use a positive count, or 0 for the default", backend, o.BatchSize)
	}
	if o.Buffer < 0 {
		return fmt.Errorf("%s: ConsumerOptions.Buffer is %d: use a positive count, or 0 for the default", backend, o.Buffer)
	}
	return nil
}

// defaultOwner names a consumer after its host and process, plus a random
// suffix so that two consumers in one process differ.
func defaultOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return host + ":" + strconv.Itoa(os.Getpid()) + ":" + hex.EncodeToString(b[:])
}

// Stored is the ID and payload a mailbox stores of a published message: a
// new ID where it has none, and an empty payload for a nil one.
func Stored(msg channel.Message) (id string, payload []byte) {
	if msg.ID == "" {
		msg.ID = channel.NewMessageID()
	}
	if msg.Payload == nil {
		msg.Payload = []byte{}
	}
	return msg.ID, msg.Payload
}
