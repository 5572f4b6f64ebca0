package main

import (
	"bufio"
	"context"
	"net"
	"reflect"
	"testing"
	"time"
)

func TestParseFilters(t *testing.T) {
	got, err := parseFilters("label=org.testcontainers=true&label=org.testcontainers.sessionId=abc\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"org.testcontainers=true", "org.testcontainers.sessionId=abc"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for _, bad := range []string{"", "name=x", "label="} {
		if _, err := parseFilters(bad); err == nil {
			t.Errorf("parseFilters(%q) accepted it", bad)
		}
	}
}

// What was created after the last client left belongs to a client still to
// come, and is kept.
func TestCreatedAfter(t *testing.T) {
	cutoff := time.Unix(1_700_000_000, 0)
	for _, c := range []struct {
		v    any
		want bool
	}{
		{float64(1_699_999_999), false},
		{float64(1_700_000_000), false},
		{float64(1_700_000_001), true},
		{"2023-11-14T22:13:19.5Z", false},
		{"2023-11-14T22:13:21Z", true},
		{"not a time", false},
		{nil, false},
	} {
		if got := createdAfter(c.v, cutoff); got != c.want {
			t.Errorf("createdAfter(%v) = %v, want %v", c.v, got, c.want)
		}
	}
}

// The reaper acknowledges each filter line, keeps serving while a client is
// connected, and ends once the last one has been gone for the reconnection
// wait.
func TestServeEndsAfterTheLastClientLeaves(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &reaper{docker: dockerClient("/nonexistent/docker.sock"), connectWait: 5 * time.Second, reconnectWait: 200 * time.Millisecond}
	done := make(chan struct{})
	go func() { r.run(context.Background(), l); close(done) }()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("label=a=1&label=b=2\n")); err != nil {
		t.Fatal(err)
	}
	ack, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || ack != "ACK\n" {
		t.Fatalf("reply %q, %v; want ACK", ack, err)
	}
	select {
	case <-done:
		t.Fatal("serve ended while a client was connected")
	case <-time.After(500 * time.Millisecond):
	}
	c.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not end after the last client left")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if got := r.filters["label=a=1&label=b=2"]; !reflect.DeepEqual(got, []string{"a=1", "b=2"}) {
		t.Fatalf("filters %q", r.filters)
	}
}

func TestServeEndsWhenNoClientComes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &reaper{docker: dockerClient("/nonexistent/docker.sock"), connectWait: 100 * time.Millisecond, reconnectWait: time.Hour}
	done := make(chan struct{})
	go func() { r.run(context.Background(), l); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("serve waited past the connection timeout")
	}
}
