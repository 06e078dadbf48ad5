// Package ocitest starts the real container tools the OCI tests check
// against: a docker-registry on a loopback port.
package ocitest

import (
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/internal/testsupport"
)

// Registry is a docker-registry (distribution 2.8) serving plain HTTP on
// a loopback port, with its storage in a directory of its own.
type Registry struct {
	Host    string // 127.0.0.1:PORT
	Storage string // its storage's root directory
	cmd     *exec.Cmd
	done    chan struct{}
	logs    *testsupport.LockedBuffer
}

// FreeAddr returns a loopback address with a port nothing listens on
// (at the time of the call).
func FreeAddr() (string, error) { return testsupport.FreeAddrOn("127.0.0.1") }

// Start starts docker-registry on a loopback port with its configuration
// and storage in dir and returns once it answers /v2/. A missing
// docker-registry is an error saying how to install it.
func Start(dir string) (*Registry, error) { return StartOn(dir, "127.0.0.1") }

// StartOn is Start listening on the address ip.
func StartOn(dir, ip string) (*Registry, error) {
	if _, err := exec.LookPath("docker-registry"); err != nil {
		return nil, fmt.Errorf("docker-registry not found: scripts/setup-test installs it (apt-get install docker-registry)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	host, err := testsupport.FreeAddrOn(ip)
	if err != nil {
		return nil, err
	}
	storage := filepath.Join(dir, "storage")
	config := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", storage, host)), 0o644); err != nil {
		return nil, err
	}
	r := &Registry{Host: host, Storage: storage, cmd: exec.Command("docker-registry", "serve", config), done: make(chan struct{}), logs: &testsupport.LockedBuffer{}}
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	for {
		select {
		case <-r.done:
			return nil, fmt.Errorf("docker-registry exited:\n%s", r.logs.String())
		default:
		}
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartT starts a registry for the test's life; failing to is fatal.
func StartT(t testing.TB) *Registry {
	t.Helper()
	r, err := Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// Stop kills the registry and waits for it.
func (r *Registry) Stop() {
	r.cmd.Process.Kill()
	<-r.done
}

// Blobs lists the digests of the blobs in the registry's storage,
// sorted.
func (r *Registry) Blobs() ([]string, error) {
	root := filepath.Join(r.Storage, "docker", "registry", "v2", "blobs", "sha256")
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if os.IsNotExist(err) && p == root {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "data" {
			out = append(out, "sha256:"+filepath.Base(filepath.Dir(p)))
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// Logs is what the registry wrote.
func (r *Registry) Logs() string { return r.logs.String() }

// Need fails the test if a tool is missing.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%s not found: scripts/setup-test installs the tools the tests use", strings.Join(missing, ", "))
	}
}
