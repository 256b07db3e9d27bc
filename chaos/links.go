package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// links are the Toxiproxy proxies between previewd and what it talks to,
// run in-process with Toxiproxy's own server package.
type links struct {
	srv *toxiproxy.ApiServer
	mu  sync.Mutex
	all []*toxiproxy.Proxy
}

func newLinks() *links {
	return &links{srv: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())}
}

// add starts a proxy on a free loopback port to upstream and returns it.
func (l *links) add(name, upstream string) (*toxiproxy.Proxy, error) {
	p := toxiproxy.NewProxy(l.srv, name, "127.0.0.1:0", upstream)
	if err := l.srv.Collection.Add(p, true); err != nil {
		return nil, fmt.Errorf("toxiproxy %s: %w", name, err)
	}
	l.mu.Lock()
	l.all = append(l.all, p)
	l.mu.Unlock()
	return p, nil
}

// toxic is the JSON form Toxiproxy's API takes.
type toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float64        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// addToxic adds t to every proxy in ps.
func addToxic(ps []*toxiproxy.Proxy, t toxic) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if _, err := p.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
			return fmt.Errorf("toxic %s on %s: %w", t.Name, p.Name, err)
		}
	}
	return nil
}

// removeToxic removes the toxic named name from every proxy in ps.
func removeToxic(ps []*toxiproxy.Proxy, name string) {
	for _, p := range ps {
		_ = p.Toxics.RemoveToxic(context.Background(), name)
	}
}

func (l *links) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.all {
		p.Stop()
	}
}
