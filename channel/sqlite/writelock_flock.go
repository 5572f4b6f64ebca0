//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package sqlite

import (
	"errors"
	"os"
	"syscall"
)

func openLockFile(path string) (*os.File, error) {
	// flock needs no write access: a read-only descriptor also works for a
	// lock file created by another user.
	return os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o666)
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

func tryLockFile(f *os.File) (bool, error) {
	err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}

func lockFile(f *os.File) error   { return flock(f, syscall.LOCK_EX) }
func unlockFile(f *os.File) error { return flock(f, syscall.LOCK_UN) }
