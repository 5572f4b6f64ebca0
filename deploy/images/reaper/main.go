// Command reaper removes what a test session left in Docker, speaking the
// protocol of testcontainers' Ryuk, so that testcontainers-go can run where
// no registry serves the Ryuk image. scripts/images.sh builds it into the
// image testcontainers-go asks for.
//
// A client connects on port 8080 and sends lines of label filters
// ("label=k=v&label=k2=v2"), each answered "ACK". When the last client has
// gone and none comes back within RYUK_RECONNECTION_TIMEOUT (10s), every
// container, network, volume and image matching one of the filters, and
// created before the last client left, is removed and the reaper exits
// (unless a client came back meanwhile: test binaries of one session share
// a reaper, and one may start just as another ends). It exits the same way when no client comes
// within RYUK_CONNECTION_TIMEOUT (60s), or on SIGTERM.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	r := &reaper{
		docker:        dockerClient(envOr("DOCKER_SOCKET", "/var/run/docker.sock")),
		connectWait:   durationEnv("RYUK_CONNECTION_TIMEOUT", time.Minute),
		reconnectWait: durationEnv("RYUK_RECONNECTION_TIMEOUT", 10*time.Second),
	}
	l, err := net.Listen("tcp", ":"+envOr("RYUK_PORT", "8080"))
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("Started on %s", l.Addr())
	r.run(ctx, l)
}

// reaper tracks clients and the filters they sent.
type reaper struct {
	docker        *http.Client
	connectWait   time.Duration
	reconnectWait time.Duration

	mu       sync.Mutex
	clients  int
	lastLeft time.Time           // when the client count last fell to 0
	filters  map[string][]string // one key per filter line, its label filters
	idle     chan struct{}       // signalled when the client count changes
}

// run serves clients on l and prunes once they have gone. A client that
// comes back while the prune runs (a test binary of the same session
// starting as another ended) is served again, and what it created after the
// last client left is never pruned.
func (r *reaper) run(ctx context.Context, l net.Listener) {
	r.start(l)
	defer l.Close()
	for {
		cutoff := r.serve(ctx)
		if ctx.Err() != nil {
			cutoff = time.Now()
		}
		r.prune(context.Background(), cutoff)
		r.mu.Lock()
		clients := r.clients
		r.mu.Unlock()
		if ctx.Err() != nil || clients == 0 {
			return
		}
		log.Printf("a client came back during the prune; serving again")
	}
}

// start accepts clients on l until it is closed.
func (r *reaper) start(l net.Listener) {
	r.filters = map[string][]string{}
	r.idle = make(chan struct{}, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.change(+1)
			go func() {
				defer r.change(-1)
				r.handle(c)
			}()
		}
	}()
}

// serve returns once no client has been connected for the reconnection
// wait (or, before the first, the connection wait), or ctx ends. It
// returns when the last client left.
func (r *reaper) serve(ctx context.Context) time.Time {
	r.mu.Lock()
	wait := r.reconnectWait
	if r.lastLeft.IsZero() {
		wait = r.connectWait
	}
	r.mu.Unlock()
	for {
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return time.Now()
		case <-r.idle:
			timer.Stop()
		case <-timer.C:
			r.mu.Lock()
			clients, left := r.clients, r.lastLeft
			r.mu.Unlock()
			if clients == 0 {
				return left
			}
		}
		r.mu.Lock()
		if r.clients == 0 {
			wait = r.reconnectWait
		} else {
			wait = time.Hour
		}
		r.mu.Unlock()
	}
}

func (r *reaper) change(delta int) {
	r.mu.Lock()
	r.clients += delta
	if r.clients == 0 {
		r.lastLeft = time.Now()
	}
	r.mu.Unlock()
	select {
	case r.idle <- struct{}{}:
	default:
	}
}

// handle reads filter lines from one client and acknowledges each.
func (r *reaper) handle(c net.Conn) {
	defer c.Close()
	lines := bufio.NewScanner(c)
	for lines.Scan() {
		labels, err := parseFilters(lines.Text())
		if err != nil {
			log.Printf("%s: %v", c.RemoteAddr(), err)
			fmt.Fprintf(c, "ERR %v\n", err)
			continue
		}
		r.mu.Lock()
		r.filters[lines.Text()] = labels
		r.mu.Unlock()
		log.Printf("%s: will remove what matches %s", c.RemoteAddr(), strings.Join(labels, ", "))
		if _, err := c.Write([]byte("ACK\n")); err != nil {
			return
		}
	}
}

// parseFilters turns "label=k=v&label=k2" into Docker label filters
// ("k=v", "k2").
func parseFilters(line string) ([]string, error) {
	var labels []string
	for _, part := range strings.Split(strings.TrimSpace(line), "&") {
		kind, value, ok := strings.Cut(part, "=")
		if !ok || kind != "label" || value == "" {
			return nil, fmt.Errorf("filter %q: want label=key=value", part)
		}
		labels = append(labels, value)
	}
	return labels, nil
}

// prune removes what every filter matches and was created up to cutoff:
// containers first, since a network or volume in use cannot go.
func (r *reaper) prune(ctx context.Context, cutoff time.Time) {
	r.mu.Lock()
	filters := make([][]string, 0, len(r.filters))
	for _, labels := range r.filters {
		filters = append(filters, labels)
	}
	r.mu.Unlock()
	for _, labels := range filters {
		q, _ := json.Marshal(map[string][]string{"label": labels})
		filter := "filters=" + url.QueryEscape(string(q))
		for _, kind := range []struct{ list, id, created, remove string }{
			{"/containers/json?all=true&" + filter, "Id", "Created", "/containers/%s?force=true&v=true"},
			{"/networks?" + filter, "Id", "Created", "/networks/%s"},
			{"/volumes?" + filter, "Name", "CreatedAt", "/volumes/%s?force=true"},
			{"/images/json?" + filter, "Id", "Created", "/images/%s?force=true"},
		} {
			objects, err := r.list(ctx, kind.list)
			if err != nil {
				log.Printf("list %s: %v", kind.list, err)
				continue
			}
			removed := 0
			for _, o := range objects {
				id, _ := o[kind.id].(string)
				if id == "" || createdAfter(o[kind.created], cutoff) {
					continue
				}
				if err := r.call(ctx, http.MethodDelete, fmt.Sprintf(kind.remove, id), nil); err != nil {
					log.Printf("remove %s: %v", id, err)
					continue
				}
				removed++
			}
			if removed > 0 {
				log.Printf("removed %d from %s", removed, strings.SplitN(kind.list, "?", 2)[0])
			}
		}
	}
}

// createdAfter reads Docker's creation time, a Unix second (containers,
// images) or an RFC 3339 time (networks, volumes). Unreadable counts as
// old: the label says it is the session's.
func createdAfter(v any, cutoff time.Time) bool {
	switch c := v.(type) {
	case float64:
		return int64(c) > cutoff.Unix()
	case string:
		t, err := time.Parse(time.RFC3339Nano, c)
		return err == nil && t.After(cutoff)
	}
	return false
}

// list returns the objects a list call returns. Volumes come wrapped in
// {"Volumes": [...]}.
func (r *reaper) list(ctx context.Context, path string) ([]map[string]any, error) {
	var raw json.RawMessage
	if err := r.call(ctx, http.MethodGet, path, &raw); err != nil {
		return nil, err
	}
	var objects []map[string]any
	if err := json.Unmarshal(raw, &objects); err != nil {
		var wrapped struct{ Volumes []map[string]any }
		if err := json.Unmarshal(raw, &wrapped); err != nil {
			return nil, err
		}
		objects = wrapped.Volumes
	}
	return objects, nil
}

func (r *reaper) call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, nil)
	if err != nil {
		return err
	}
	resp, err := r.docker.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
		var msg struct{ Message string }
		_ = json.NewDecoder(resp.Body).Decode(&msg)
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg.Message)
	}
	if out == nil || resp.StatusCode == http.StatusNotFound {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// dockerClient talks HTTP to the engine's unix socket.
func dockerClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func durationEnv(name string, fallback time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return fallback
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		log.Fatal(errors.New(name + ": " + err.Error()))
	}
	return d
}
