package sqlite

import (
	"context"
	"fmt"
	"os"
	"sync"
)

// writerLock queues the write transactions on one database file: within
// the process with a mutex, and between processes with an advisory lock on
// a sidecar file ("<file>-postbox-lock").
//
// SQLite lets one writer in at a time and makes the others poll, sleeping
// up to 100ms between tries. Under load a waiting process then rarely finds
// the lock free when it looks, and can starve for seconds: long enough to
// lose its leases. Waiters of the advisory lock are woken by the kernel as
// soon as it is released instead.
type writerLock struct {
	mu   sync.Mutex
	file *os.File // nil where advisory locks are not available, or once released
	refs int      // Mailboxes using it; guarded by writerLocksMu
	path string
}

var (
	writerLocksMu sync.Mutex
	writerLocks   = make(map[string]*writerLock) // by absolute database path
)

// acquireWriterLock returns the writer lock of the database at path,
// shared by every Mailbox of this process open on it.
func acquireWriterLock(path string) (*writerLock, error) {
	writerLocksMu.Lock()
	defer writerLocksMu.Unlock()
	l, ok := writerLocks[path]
	if !ok {
		f, err := openLockFile(path + "-postbox-lock")
		if err != nil {
			return nil, fmt.Errorf("sqlite: open the writer lock file next to %s: %w", path, err)
		}
		l = &writerLock{file: f, path: path}
		writerLocks[path] = l
	}
	l.refs++
	return l, nil
}

// release gives back a reference taken by acquireWriterLock.
func (l *writerLock) release() {
	writerLocksMu.Lock()
	defer writerLocksMu.Unlock()
	l.refs--
	if l.refs == 0 {
		delete(writerLocks, l.path)
		l.mu.Lock() // nobody is between lock and unlock
		if l.file != nil {
			l.file.Close()
			l.file = nil
		}
		l.mu.Unlock()
	}
}

// lock takes the lock, or gives up when ctx ends while another process
// holds it.
func (l *writerLock) lock(ctx context.Context) error {
	l.mu.Lock()
	if l.file == nil {
		return nil
	}
	if ok, err := tryLockFile(l.file); err != nil || ok {
		if err != nil {
			l.mu.Unlock()
		}
		return err
	}
	done := make(chan error, 1)
	go func() { done <- lockFile(l.file) }()
	select {
	case err := <-done:
		if err != nil {
			l.mu.Unlock()
		}
		return err
	case <-ctx.Done():
		// The waiting goroutine keeps the mutex until it has the file lock
		// and has let go of it again.
		go func() {
			if err := <-done; err == nil {
				_ = unlockFile(l.file)
			}
			l.mu.Unlock()
		}()
		return ctx.Err()
	}
}

func (l *writerLock) unlock() {
	if l.file != nil {
		_ = unlockFile(l.file)
	}
	l.mu.Unlock()
}
