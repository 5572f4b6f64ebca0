package runonce_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/runonce"
)

func TestRunsOnceAndCloseWaitsForIt(t *testing.T) {
	var g runonce.Gate
	ctx, end, err := g.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.Begin(context.Background()); !errors.Is(err, runonce.ErrTwice) {
		t.Fatalf("second Begin: %v, want ErrTwice", err)
	}
	returned := make(chan struct{})
	go func() {
		<-ctx.Done() // Run ends when Close cancels it
		time.Sleep(10 * time.Millisecond)
		close(returned)
		end()
	}()
	g.Close()
	select {
	case <-returned:
	default:
		t.Fatal("Close returned before Run did")
	}
	if _, _, err := g.Begin(context.Background()); !errors.Is(err, channel.ErrClosed) {
		t.Fatalf("Begin after Close: %v, want channel.ErrClosed", err)
	}
}

func TestCloseBeforeRun(t *testing.T) {
	var g runonce.Gate
	g.Close() // nothing running: returns at once
	if _, _, err := g.Begin(context.Background()); !errors.Is(err, channel.ErrClosed) {
		t.Fatalf("Begin after Close: %v, want channel.ErrClosed", err)
	}
}
