//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package sqlite

import "os"

// Without flock, writers of different processes queue in SQLite's busy
// handler alone.
func openLockFile(string) (*os.File, error) { return nil, nil }
func tryLockFile(*os.File) (bool, error)    { return true, nil }
func lockFile(*os.File) error               { return nil }
func unlockFile(*os.File) error             { return nil }
