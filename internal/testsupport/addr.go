package testsupport

import (
	"net"
	"testing"
)

// FreeAddr returns a loopback address, 127.0.0.1:PORT, with a port nothing
// listens on at the time of the call: for a server the test starts, or as
// an endpoint that refuses connections. Not finding one is fatal.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := FreeAddrOn("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreeAddrOn is FreeAddr on the address ip, for the starters that return
// their errors rather than fail a test.
func FreeAddrOn(ip string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
