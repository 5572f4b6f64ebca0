package testenv

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"testing"
)

// FreeAddr returns a loopback address ("127.0.0.1:PORT") with no listener
// on it now, for a server a test starts. The port is taken from below the
// kernel's ephemeral range: a port the kernel hands out for ":0" (to a
// client socket, or to docker-proxy publishing a container) could be taken
// between this call and the server's bind, and was, under load.
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	for range 200 {
		port := freeRangeStart + rand.IntN(low-freeRangeStart)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use; try another
		}
		ln.Close()
		return ln.Addr().String()
	}
	t.Fatalf("no free loopback port in %d-%d", freeRangeStart, low-1)
	return ""
}

// freeRangeStart keeps FreeAddr clear of well-known and registered
// service ports (Kafka 9092, PostgreSQL 5432, Redis 6379, …).
const freeRangeStart = 20000

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default is 32768).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var hi int
		if n, _ := fmt.Sscan(string(b), &low, &hi); n != 2 {
			low = 32768
		}
	}
	if low <= freeRangeStart+1000 {
		low = 32768
	}
	return low
}

// Get fetches url and returns the status and body; a request that fails
// is status 0 with the error as the body.
func Get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
