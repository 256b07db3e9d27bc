package testutil

import (
	"bytes"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/store"
)

// LossyProxy is a TCP proxy in front of a Redis server that loses replies
// for real: armed with a marker, it forwards the next command whose bytes
// contain the marker, lets Redis run it, and then closes the client's
// connection instead of relaying the reply. The client sees a network error
// after the server acted, which is exactly when go-redis re-sends a command.
// It can also make Redis unreachable for a while (an outage, a failover).
type LossyProxy struct {
	t        testing.TB
	ln       net.Listener
	upstream string

	mu       sync.Mutex
	markers  [][]byte // each loses one reply
	outageTo time.Time
	conns    map[net.Conn]struct{}
	lost     int
}

// NewLossyProxy listens on a loopback port and forwards to upstream
// (host:port). It closes when the test ends.
func NewLossyProxy(t testing.TB, upstream string) *LossyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &LossyProxy{t: t, ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *LossyProxy) Addr() string { return p.ln.Addr().String() }

// LoseReplyTo arms the proxy: the next command containing marker runs on
// Redis, and its reply is lost with the connection. Each call arms once.
func (p *LossyProxy) LoseReplyTo(marker string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.markers = append(p.markers, []byte(marker))
}

// Lost reports how many replies the proxy has lost so far.
func (p *LossyProxy) Lost() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lost
}

// Outage cuts every connection and refuses new ones for d.
func (p *LossyProxy) Outage(d time.Duration) {
	p.mu.Lock()
	p.outageTo = time.Now().Add(d)
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (p *LossyProxy) close() {
	_ = p.ln.Close()
	p.Outage(0)
}

func (p *LossyProxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := time.Now().Before(p.outageTo)
		if !down {
			p.conns[client] = struct{}{}
		}
		p.mu.Unlock()
		if down {
			_ = client.Close()
			continue
		}
		go p.pipe(client)
	}
}

// pipe relays one client connection. Commands flow client → server; a
// command that carries an armed marker sets loseNext, and the server's
// next bytes (its reply) are dropped with both connections.
func (p *LossyProxy) pipe(client net.Conn) {
	defer p.forget(client)
	server, err := net.DialTimeout("tcp", p.upstream, 2*time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.conns[server] = struct{}{}
	p.mu.Unlock()
	defer p.forget(server)

	var loseNext sync.Mutex // held while a marked command's reply is awaited
	var marked bool
	go func() {
		defer p.forget(server)
		defer p.forget(client)
		buf := make([]byte, 64<<10)
		var tail []byte // the end of the previous read: a marker may straddle two
		for {
			n, err := client.Read(buf)
			if n > 0 {
				window := append(tail, buf[:n]...)
				tail = append([]byte(nil), window[max(0, len(window)-256):]...)
				if p.takeMarker(window) {
					loseNext.Lock()
					marked = true
					loseNext.Unlock()
				}
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			loseNext.Lock()
			lose := marked
			loseNext.Unlock()
			if lose {
				p.mu.Lock()
				p.lost++
				p.mu.Unlock()
				return // the reply dies with the connection
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// takeMarker consumes the first armed marker found in b.
func (p *LossyProxy) takeMarker(b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	records := packedRecords(b)
	for i, m := range p.markers {
		if bytes.Contains(b, m) || bytes.Contains(records, m) {
			p.markers = append(p.markers[:i], p.markers[i+1:]...)
			return true
		}
	}
	return false
}

// packedStart is how a packed record begins (store.Unpack): the format byte
// and zstd's frame magic.
var packedStart = []byte("\r\n\x01\x28\xb5\x2f\xfd")

// packedRecords returns the JSON of the packed records whose bulk strings
// lie whole in b, so that markers match what a command writes, not how it
// is encoded.
func packedRecords(b []byte) []byte {
	var out []byte
	for off := 0; ; {
		i := bytes.Index(b[off:], packedStart)
		if i < 0 {
			return out
		}
		start := off + i + 2 // the record, after the bulk header's CRLF
		off = start
		head := bytes.LastIndexByte(b[:start-2], '$')
		if head < 0 {
			continue
		}
		n, err := strconv.Atoi(string(b[head+1 : start-2]))
		if err != nil || n <= 0 || start+n > len(b) {
			continue
		}
		if raw, err := store.Unpack(b[start : start+n]); err == nil {
			out = append(append(out, raw...), '\n')
		}
	}
}

func (p *LossyProxy) forget(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// LossyClient returns a client of the test's Redis that goes through a new
// LossyProxy, with the URL's other settings (DB, password) and go-redis's
// default retries, and the proxy to inject faults with.
func (r *Redis) LossyClient(t testing.TB) (*redis.Client, *LossyProxy) {
	t.Helper()
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := NewLossyProxy(t, opts.Addr)
	opts.Addr = proxy.Addr()
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	return client, proxy
}
