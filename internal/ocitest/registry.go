// Package ocitest runs the real container tools that tests check OCI
// images and their signatures with.
package ocitest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// Registry is a docker-registry (the distribution project's registry 2)
// serving plain HTTP on a loopback port: skopeo and podman reach it with
// --tls-verify=false.
type Registry struct {
	// Host is host:port, what image references on it start with.
	Host string
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

// startTimeout bounds the wait for a registry to answer.
const startTimeout = 30 * time.Second

// StartRegistry starts docker-registry on a free loopback port, keeping
// its configuration and storage in dir, and returns once it answers
// /v2/. Stop it with Stop.
func StartRegistry(dir string) (*Registry, error) {
	if _, err := exec.LookPath("docker-registry"); err != nil {
		return nil, errors.New("docker-registry not found: run the tests with scripts/test, which installs what they need")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	host := l.Addr().String()
	l.Close()
	config := filepath.Join(dir, "registry.yml")
	data := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "registry-storage"), host)
	if err := os.WriteFile(config, []byte(data), 0o644); err != nil {
		return nil, err
	}
	var logs bytes.Buffer
	cmd := exec.Command("docker-registry", "serve", config)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &Registry{Host: host, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-r.done:
			return nil, fmt.Errorf("docker-registry exited: %s", logs.String())
		default:
		}
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		if time.Now().After(deadline) {
			r.Stop()
			return nil, fmt.Errorf("docker-registry on %s did not answer in %v: %v", host, startTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the registry and waits for it to exit.
func (r *Registry) Stop() {
	r.once.Do(func() {
		r.cmd.Process.Kill()
		<-r.done
	})
}
