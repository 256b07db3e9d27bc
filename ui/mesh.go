package ui

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/previewd/previewd/webhook"
)

// mesh is /ui/jobs/{id}/mesh.glb: the job's GLB fetched by previewd, so the
// browser needs neither access to CSM's CDN nor CORS from it. The fetch
// goes through the webhook address policy (Fetcher: no loopback, private
// or metadata addresses unless PREVIEWD_WEBHOOK_ALLOW_PRIVATE), is capped
// at MeshMaxBytes and kept MeshCacheTTL. Only a binary glTF is served, as
// model/gltf-binary with nosniff: whatever else a URL returns never runs
// as a page of this origin.
func (u *UI) mesh(w http.ResponseWriter, r *http.Request) {
	if u.opts.Mesh == nil {
		u.errorPage(w, http.StatusNotFound, "No 3D view", "this server does not fetch meshes")
		return
	}
	j, ok := u.jobOf(w, r)
	if !ok {
		return
	}
	src := j.MeshURLs["glb"]
	if src == "" {
		u.errorPage(w, http.StatusNotFound, "No GLB", "the job has no GLB mesh (yet)")
		return
	}
	now := u.opts.Now()
	body, ok := u.cache.get(src, now)
	if !ok {
		var err error
		body, _, err = u.opts.Mesh.Fetch(r.Context(), src, u.opts.MeshMaxBytes)
		if err == nil && !isGLB(body) {
			err = errNotGLB
		}
		if err != nil {
			// The URL may carry a signed token: log the job, not the URL.
			u.log.Warn("mesh fetch failed", zap.String("job_id", j.ID), zap.Error(err))
			status, detail := http.StatusBadGateway, "the mesh could not be fetched from its URL"
			var de *webhook.DeliveryError
			switch {
			case errors.Is(err, webhook.ErrTooLarge):
				detail = "the mesh is larger than " + byteSize(u.opts.MeshMaxBytes)
			case errors.As(err, &de) && de.Blocked:
				status, detail = http.StatusForbidden, "the mesh URL is refused by the address policy (not a public address)"
			case errors.Is(err, errNotGLB):
				detail = "the mesh URL did not return a binary glTF"
			}
			u.errorPage(w, status, "Mesh unavailable", detail)
			return
		}
		u.cache.put(src, body, now.Add(u.opts.MeshCacheTTL))
	}
	h := w.Header()
	h.Set("Content-Type", "model/gltf-binary")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "private, max-age="+strconv.Itoa(int(u.opts.MeshCacheTTL.Seconds())))
	h.Set("Content-Disposition", `inline; filename="`+j.ID+`.glb"`)
	_, _ = w.Write(body)
}

var errNotGLB = errors.New("not a binary glTF")

// isGLB checks the binary glTF header: magic, version 2, length.
func isGLB(b []byte) bool {
	if len(b) < 12 || !bytes.Equal(b[:4], []byte("glTF")) || b[4] != 2 || b[5]|b[6]|b[7] != 0 {
		return false
	}
	n := int(b[8]) | int(b[9])<<8 | int(b[10])<<16 | int(b[11])<<24
	return n == len(b)
}

// meshCache keeps recently fetched meshes by URL, bounded in bytes: a
// page view loads its mesh once, and a few operators looking at the same
// job fetch it once.
type meshCache struct {
	mu      sync.Mutex
	max     int64
	size    int64
	entries map[string]meshEntry
}

type meshEntry struct {
	body    []byte
	expires time.Time
}

func newMeshCache(max int64) *meshCache {
	return &meshCache{max: max, entries: map[string]meshEntry{}}
}

func (c *meshCache) get(key string, now time.Time) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	return e.body, true
}

// put stores body, first dropping expired entries, then the ones closest
// to expiry, until it fits.
func (c *meshCache) put(key string, body []byte, expires time.Time) {
	n := int64(len(body))
	if n > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[key]; ok {
		c.size -= int64(len(old.body))
		delete(c.entries, key)
	}
	for c.size+n > c.max {
		var victim string
		var soonest time.Time
		for k, e := range c.entries {
			if victim == "" || e.expires.Before(soonest) {
				victim, soonest = k, e.expires
			}
		}
		c.size -= int64(len(c.entries[victim].body))
		delete(c.entries, victim)
	}
	c.entries[key] = meshEntry{body: body, expires: expires}
	c.size += n
}

func byteSize(n int64) string {
	if n >= 1<<20 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
