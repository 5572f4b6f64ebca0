package actorhost

import (
	"testing"
	"time"
)

func TestPauseDoublesUpToItsCap(t *testing.T) {
	p := newPause(time.Millisecond)
	var got []time.Duration
	for range 4 {
		got = append(got, p.next())
		if !p.wait(nil, nil) {
			t.Fatal("a wait with no stop channel ended early")
		}
	}
	want := []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 8 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
	p = newPause(4 * time.Second)
	p.grow()
	if p.next() != maxPause {
		t.Fatalf("after 4s the next wait is %s, want the cap %s", p.next(), maxPause)
	}
}

func TestPauseEndsWhenEitherChannelCloses(t *testing.T) {
	for _, which := range []string{"a", "b"} {
		a, b := make(chan struct{}), make(chan struct{})
		if which == "a" {
			close(a)
		} else {
			close(b)
		}
		p := newPause(time.Hour)
		if p.wait(a, b) {
			t.Fatalf("closing %s did not end the wait", which)
		}
		if p.next() != time.Hour {
			t.Fatalf("an interrupted wait grew the next one to %s", p.next())
		}
	}
}
