package csmsim

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
)

// CubeGLB returns a small valid binary glTF 2.0 file: a unit cube with
// per-face normals and one coloured material. The simulator serves it at
// the .glb mesh URLs it invents (when they point at itself: BaseAssetURL
// set to the simulator's own URL), so that a viewer shows a real model.
func CubeGLB() []byte { return bytes.Clone(cubeGLB()) }

var cubeGLB = sync.OnceValue(buildCubeGLB)

func buildCubeGLB() []byte {
	// Six faces, each four vertices with the face's normal.
	faces := [6][3]float32{{1, 0, 0}, {-1, 0, 0}, {0, 1, 0}, {0, -1, 0}, {0, 0, 1}, {0, 0, -1}}
	var pos, norm []float32
	var idx []uint16
	for _, n := range faces {
		// Two axes spanning the face, u × v = n so the winding faces out.
		var u, v [3]float32
		switch {
		case n[0] != 0:
			u, v = [3]float32{0, n[0], 0}, [3]float32{0, 0, 1}
		case n[1] != 0:
			u, v = [3]float32{0, 0, n[1]}, [3]float32{1, 0, 0}
		default:
			u, v = [3]float32{n[2], 0, 0}, [3]float32{0, 1, 0}
		}
		base := uint16(len(pos) / 3)
		for _, c := range [4][2]float32{{-1, -1}, {1, -1}, {1, 1}, {-1, 1}} {
			for k := range 3 {
				pos = append(pos, 0.5*(n[k]+c[0]*u[k]+c[1]*v[k]))
			}
			norm = append(norm, n[:]...)
		}
		idx = append(idx, base, base+1, base+2, base, base+2, base+3)
	}
	var bin bytes.Buffer
	_ = binary.Write(&bin, binary.LittleEndian, pos)
	_ = binary.Write(&bin, binary.LittleEndian, norm)
	_ = binary.Write(&bin, binary.LittleEndian, idx)
	for bin.Len()%4 != 0 {
		bin.WriteByte(0)
	}
	posLen, idxLen := len(pos)*4, len(idx)*2
	doc := map[string]any{
		"asset":  map[string]any{"version": "2.0", "generator": "previewd csmsim"},
		"scene":  0,
		"scenes": []any{map[string]any{"nodes": []int{0}}},
		"nodes":  []any{map[string]any{"mesh": 0, "name": "cube"}},
		"meshes": []any{map[string]any{"primitives": []any{map[string]any{
			"attributes": map[string]int{"POSITION": 0, "NORMAL": 1}, "indices": 2, "material": 0,
		}}}},
		"materials": []any{map[string]any{"pbrMetallicRoughness": map[string]any{
			"baseColorFactor": []float64{0.95, 0.45, 0.1, 1}, "metallicFactor": 0.1, "roughnessFactor": 0.6,
		}}},
		"buffers": []any{map[string]any{"byteLength": bin.Len()}},
		"bufferViews": []any{
			map[string]any{"buffer": 0, "byteOffset": 0, "byteLength": posLen, "target": 34962},
			map[string]any{"buffer": 0, "byteOffset": posLen, "byteLength": posLen, "target": 34962},
			map[string]any{"buffer": 0, "byteOffset": 2 * posLen, "byteLength": idxLen, "target": 34963},
		},
		"accessors": []any{
			map[string]any{"bufferView": 0, "componentType": 5126, "count": len(pos) / 3, "type": "VEC3",
				"min": []float64{-0.5, -0.5, -0.5}, "max": []float64{0.5, 0.5, 0.5}},
			map[string]any{"bufferView": 1, "componentType": 5126, "count": len(norm) / 3, "type": "VEC3"},
			map[string]any{"bufferView": 2, "componentType": 5123, "count": len(idx), "type": "SCALAR"},
		},
	}
	js, err := json.Marshal(doc)
	if err != nil {
		panic("csmsim: cube glTF: " + err.Error())
	}
	for len(js)%4 != 0 {
		js = append(js, ' ')
	}
	var out bytes.Buffer
	total := 12 + 8 + len(js) + 8 + bin.Len()
	le := binary.LittleEndian
	out.Write([]byte("glTF"))
	_ = binary.Write(&out, le, uint32(2))
	_ = binary.Write(&out, le, uint32(total))
	_ = binary.Write(&out, le, uint32(len(js)))
	out.Write([]byte("JSON"))
	out.Write(js)
	_ = binary.Write(&out, le, uint32(bin.Len()))
	out.Write([]byte("BIN\x00"))
	out.Write(bin.Bytes())
	return out.Bytes()
}

// meshesPrefix is where the invented mesh URLs live under BaseAssetURL.
const meshesPrefix = "/meshes/"

// serveAsset answers GET /meshes/{code}/{generation}/{name} as a CDN would:
// without the API key. A .glb of a known session is the cube; any other
// format of a known session is a short placeholder body (the simulator
// has no OBJ, FBX or USDZ to give); anything else is 404.
func (s *Server) serveAsset(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, meshesPrefix), "/")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	known := len(parts) == 3 && s.sessions[parts[0]] != nil
	s.mu.Unlock()
	if !known {
		http.NotFound(w, r)
		return
	}
	if strings.HasSuffix(parts[2], ".glb") {
		w.Header().Set("Content-Type", "model/gltf-binary")
		_, _ = w.Write(cubeGLB())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("csmsim placeholder for " + parts[2] + "\n"))
}
