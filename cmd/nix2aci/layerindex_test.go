package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// A layer file swapped in --out, with the layer index edited to describe
// the new file exactly (image ID, size, inode, times), is neither pinned
// nor signed: the index's entries carry tags under the cache key, the
// forged one does not verify, and the build writes the layer again and
// pins its own bytes.
func TestSwappedLayerIsNotPinned(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	hello := nixtest.Hello(t)
	dir := t.TempDir()
	nix2aci := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "NIX_PATH=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("nix2aci %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return stdout.Bytes()
	}
	testKey(t, dir)
	build := func() (layers map[string]string, pins map[string]string) {
		var res struct {
			ACI    string `json:"aci"`
			Layers []struct {
				ACI     string `json:"aci"`
				ImageID string `json:"imageID"`
				Reused  bool   `json:"reused"`
			} `json:"layers"`
		}
		out := nix2aci("build", hello, "--layered", "--name", "example.com/hello", "--no-exec-check", "--no-link", "--json", "--sign", "--key", "k.asc")
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatal(err)
		}
		layers = map[string]string{}
		for _, l := range res.Layers {
			layers[filepath.Base(l.ACI)] = l.ImageID
		}
		info, err := aci.InspectFile(filepath.Join(dir, res.ACI))
		if err != nil {
			t.Fatal(err)
		}
		pins = map[string]string{}
		for _, d := range info.Manifest.Dependencies {
			pins[d.ImageName.String()] = d.ImageID.String()
		}
		return layers, pins
	}
	layers, pins := build()
	var victim, genuine string
	for file, id := range layers {
		if strings.Contains(file, "hello-lib") {
			victim, genuine = file, id
		}
	}
	if victim == "" {
		t.Fatalf("no layer of hello-lib among %v", layers)
	}

	// The attacker's layer: the genuine one with a file added, put in
	// place under a new inode, and the index edited to match it.
	path := filepath.Join(dir, "ACIs", victim)
	forged := addFile(t, path, "rootfs/evil", "the attacker's")
	os.WriteFile(path+".new", forged, 0o644)
	os.Rename(path+".new", path)
	info, err := aci.InspectFile(path)
	if err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "ACIs", ".nix2aci-layers.json")
	data, err := os.ReadFile(index)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // stat times need all 64 bits
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	e := doc["layers"].(map[string]any)[victim].(map[string]any)
	var st syscall.Stat_t
	syscall.Stat(path, &st)
	e["imageID"], e["size"] = info.ImageID, len(forged)
	e["file"] = map[string]any{"size": len(forged), "ino": st.Ino, "dev": st.Dev, "mtime": st.Mtim.Nano(), "ctime": st.Ctim.Nano()}
	data, _ = json.Marshal(doc)
	os.WriteFile(index, data, 0o644)

	layers, pins = build()
	if layers[victim] != genuine {
		t.Errorf("the rebuild reports the swapped layer as %s, want %s", layers[victim], genuine)
	}
	for name, id := range pins {
		if id == info.ImageID {
			t.Errorf("the app pins the attacker's layer %s by ID", name)
		}
	}
	if again, err := aci.InspectFile(path); err != nil || again.ImageID != genuine {
		t.Errorf("the layer file was not written again: %v", err)
	}
	nix2aci("verify", filepath.Join("ACIs", victim), "--keyring", "p.asc")
}

// addFile returns the gzip'ed ACI at path with one more regular file.
func addFile(t *testing.T, path, name, content string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		tw.WriteHeader(hdr)
		io.Copy(tw, tr)
	}
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	io.WriteString(tw, content)
	tw.Close()
	zw.Close()
	return buf.Bytes()
}
