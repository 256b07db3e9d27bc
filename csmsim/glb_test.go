package csmsim_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/previewd/previewd/csmsim"
)

// TestCubeGLBIsValid parses the cube as a glTF loader would: header,
// JSON chunk, BIN chunk, and every accessor inside its buffer view.
func TestCubeGLBIsValid(t *testing.T) {
	t.Parallel()
	b := csmsim.CubeGLB()
	le := binary.LittleEndian
	if len(b) < 28 || string(b[:4]) != "glTF" || le.Uint32(b[4:]) != 2 || int(le.Uint32(b[8:])) != len(b) {
		t.Fatalf("bad GLB header: % x", b[:min(len(b), 12)])
	}
	jsonLen := int(le.Uint32(b[12:]))
	if string(b[16:20]) != "JSON" || jsonLen%4 != 0 {
		t.Fatalf("bad JSON chunk header")
	}
	var doc struct {
		Buffers     []struct{ ByteLength int }
		BufferViews []struct{ ByteOffset, ByteLength int }
		Accessors   []struct {
			BufferView, ComponentType, Count int
			Type                             string
		}
		Meshes []struct {
			Primitives []struct {
				Attributes map[string]int
				Indices    int
			}
		}
	}
	if err := json.Unmarshal(b[20:20+jsonLen], &doc); err != nil {
		t.Fatal(err)
	}
	bin := b[20+jsonLen:]
	binLen := int(le.Uint32(bin))
	if string(bin[4:8]) != "BIN\x00" || binLen != len(bin)-8 || binLen != doc.Buffers[0].ByteLength {
		t.Fatalf("bad BIN chunk: %d bytes, buffer %d", binLen, doc.Buffers[0].ByteLength)
	}
	size := map[int]int{5126: 4, 5123: 2}
	comps := map[string]int{"VEC3": 3, "SCALAR": 1}
	for i, a := range doc.Accessors {
		v := doc.BufferViews[a.BufferView]
		if need := a.Count * size[a.ComponentType] * comps[a.Type]; need == 0 || need > v.ByteLength || v.ByteOffset+v.ByteLength > binLen {
			t.Errorf("accessor %d: %d bytes do not fit view %+v of %d", i, need, v, binLen)
		}
	}
	p := doc.Meshes[0].Primitives[0]
	if doc.Accessors[p.Indices].Count != 36 || doc.Accessors[p.Attributes["POSITION"]].Count != 24 {
		t.Errorf("not a cube: %+v", doc.Accessors)
	}
}

// TestServesMeshFiles: the .glb URLs of a known session are the cube, with
// no API key (a CDN's URL); unknown sessions are 404.
func TestServesMeshFiles(t *testing.T) {
	t.Parallel()
	sim := csmsim.New(csmsim.Options{APIKey: "k"})
	sim.AddSession("SESSION_GLB", csmsim.SessionConfig{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	for path, want := range map[string]int{
		"/meshes/SESSION_GLB/g1/preview.glb":   200,
		"/meshes/SESSION_OTHER/g1/preview.glb": 404,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
		if want == 200 && (!bytes.Equal(body, csmsim.CubeGLB()) || resp.Header.Get("Content-Type") != "model/gltf-binary") {
			t.Errorf("%s: not the cube (%s, %d bytes)", path, resp.Header.Get("Content-Type"), len(body))
		}
	}
}
