package testenv

import (
	"io"
	"net"
	"net/http"
	"testing"
)

// FreeAddr returns a loopback address ("127.0.0.1:PORT") with no listener
// on it now, for a server a test starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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
