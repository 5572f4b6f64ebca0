package lease

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"time"
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

// MinLeaseTTL keeps renewals (every LeaseTTL/3) from being scheduled
// faster than a busy store commits them.
const MinLeaseTTL = 100 * time.Millisecond

// Defaults fills in the consumer options every leased mailbox has, where
// they are zero.
func Defaults(owner string, leaseTTL time.Duration, batchSize, buffer int) (string, time.Duration, int, int) {
	if owner == "" {
		owner = defaultOwner()
	}
	return owner, cmp.Or(leaseTTL, 10*time.Second), cmp.Or(batchSize, 256), cmp.Or(buffer, 1024)
}

// validate checks the options of c after Defaults.
func (c Config) validate() error {
	switch {
	case c.LeaseTTL < MinLeaseTTL:
		return fmt.Errorf("%s: ConsumerOptions.LeaseTTL is %v: use at least %v, or 0 for the default", c.Backend, c.LeaseTTL, MinLeaseTTL)
	case c.BatchSize < 0:
		return fmt.Errorf("%s: ConsumerOptions.BatchSize is %d: use a positive count, or 0 for the default", c.Backend, c.BatchSize)
	case c.Buffer < 0:
		return fmt.Errorf("%s: ConsumerOptions.Buffer is %d: use a positive count, or 0 for the default", c.Backend, c.Buffer)
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
