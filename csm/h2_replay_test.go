package csm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/previewd/previewd/csm"
)

// h2Server is a raw HTTP/2 server over TLS (ALPN h2), written with the
// x/net/http2 Framer so that it can do what net/http's server never does:
// reset a stream after it has read the whole request. It "bills" every POST
// whose HEADERS and DATA it received in full, answers the first request of
// each method with RST_STREAM(resetCode), and every later one with 200 and a
// valid preview job.
type h2Server struct {
	URL       string
	resetCode http2.ErrCode
	cert      *x509.Certificate
	tlsCert   tls.Certificate

	mu       sync.Mutex
	served   map[string]int // full requests received, by method
	billed   [][]byte       // bodies of the POSTs received in full
	resets   int
	problems []error
	conns    []net.Conn
}

// newH2Server starts an h2Server on a loopback port; t.Cleanup stops it.
func newH2Server(t *testing.T, resetCode http2.ErrCode) *h2Server {
	t.Helper()
	s := &h2Server{resetCode: resetCode, served: map[string]int{}}
	s.cert, s.tlsCert = selfSignedLoopbackCert(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{s.tlsCert},
		NextProtos:   []string{http2.NextProtoTLS},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.URL = "https://" + ln.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			wg.Go(func() {
				defer conn.Close()
				if err := s.serveConn(conn.(*tls.Conn)); err != nil {
					s.problem(err)
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
		for _, err := range s.problems {
			t.Errorf("h2 server: %v", err)
		}
	})
	return s
}

// transport returns an HTTP/2-only transport that trusts the server's
// certificate: net/http's own, with its bundled HTTP/2 client.
func (s *h2Server) transport(t *testing.T) *http.Transport {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(s.cert)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func (s *h2Server) problem(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.problems = append(s.problems, err)
}

// h2Request is a request being received on one stream.
type h2Request struct {
	method string
	body   bytes.Buffer
}

func (s *h2Server) serveConn(conn *tls.Conn) error {
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return err
	}
	if err := conn.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
		return fmt.Errorf("ALPN negotiated %q, want %q: the client must speak HTTP/2", p, http2.NextProtoTLS)
	}
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(conn, preface); err != nil || string(preface) != http2.ClientPreface {
		return fmt.Errorf("client preface %q: %v", preface, err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	streams := map[uint32]*h2Request{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) {
				return nil // the client went away: nothing more to bill
			}
			return fmt.Errorf("read frame: %w", err)
		}
		var done *h2Request
		var id uint32
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				err = fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			id = f.StreamID
			streams[id] = &h2Request{method: f.PseudoValue("method")}
			if f.StreamEnded() {
				done = streams[id]
			}
		case *http2.DataFrame:
			id = f.StreamID
			req := streams[id]
			if req == nil {
				return fmt.Errorf("DATA on unknown stream %d", id)
			}
			req.body.Write(f.Data())
			if f.StreamEnded() {
				done = req
			}
		}
		if err != nil {
			return err
		}
		if done != nil {
			delete(streams, id)
			if err := s.answer(fr, enc, &hbuf, id, done); err != nil {
				return err
			}
		}
	}
}

// answer bills a POST received in full, then resets the first request of
// its method and answers the others.
func (s *h2Server) answer(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer, id uint32, req *h2Request) error {
	s.mu.Lock()
	s.served[req.method]++
	first := s.served[req.method] == 1
	if req.method == http.MethodPost {
		s.billed = append(s.billed, bytes.Clone(req.body.Bytes()))
	}
	if first {
		s.resets++
	}
	s.mu.Unlock()
	if first {
		return fr.WriteRSTStream(id, s.resetCode)
	}
	hbuf.Reset()
	for _, hf := range []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/json"}} {
		if err := enc.WriteField(hf); err != nil {
			return err
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	return fr.WriteData(id, true, []byte(previewJobBody))
}

// counts returns the full requests served by method, the billed POST bodies
// and the resets sent.
func (s *h2Server) counts() (map[string]int, [][]byte, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	served := map[string]int{}
	for k, v := range s.served {
		served[k] = v
	}
	return served, append([][]byte(nil), s.billed...), s.resets
}

// selfSignedLoopbackCert returns a certificate for 127.0.0.1.
func selfSignedLoopbackCert(t *testing.T) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "csm h2 test"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
}

// TestHTTP2ResetNeverReplaysPreview: net/http's HTTP/2 client replays a
// request on REFUSED_STREAM, or on RST_STREAM(PROTOCOL_ERROR) from the peer,
// even after its body was written, whenever it can rewind the body. A
// proxy that resets the stream after forwarding the POST would make CSM
// bill two previews. The server here bills every POST it received in full
// and resets the first: exactly one may be billed, and the client must
// report that the preview may have been accepted. The GET rows are the
// control: the same server does make the transport replay a request, and
// reading a session may be replayed.
func TestHTTP2ResetNeverReplaysPreview(t *testing.T) {
	for _, code := range []http2.ErrCode{http2.ErrCodeProtocol, http2.ErrCodeRefusedStream} {
		t.Run("preview/"+code.String(), func(t *testing.T) {
			s := newH2Server(t, code)
			c := newClient(t, s.URL, func(o *csm.Options) { o.Transport = s.transport(t) })
			job, err := c.RequestPreview(t.Context(), legacyCode, turboParams(legacyCode, 1))
			served, billed, resets := s.counts()
			if len(billed) != 1 {
				t.Fatalf("server billed %d POSTs, want exactly 1: the transport replayed the preview (job %+v, err %v)", len(billed), job, err)
			}
			if !strings.Contains(string(billed[0]), `"selected_spin_index":1`) {
				t.Errorf("billed body = %q, want the preview params", billed[0])
			}
			if resets != 1 || served[http.MethodPost] != 1 {
				t.Errorf("server served %v with %d resets, want one POST, reset", served, resets)
			}
			checkError(t, err, "request preview", wantError{Kind: csm.KindTransport, Retryable: true, MaybeAccepted: true})
			if !strings.Contains(err.Error(), code.String()) {
				t.Errorf("err = %v, want it to name the reset (%s)", err, code)
			}
		})
		t.Run("get session/"+code.String(), func(t *testing.T) {
			s := newH2Server(t, code)
			c := newClient(t, s.URL, func(o *csm.Options) { o.Transport = s.transport(t) })
			if _, err := c.GetSession(t.Context(), legacyCode); err != nil {
				t.Fatalf("GetSession: %v, want the replayed read to succeed", err)
			}
			if served, _, resets := s.counts(); served[http.MethodGet] != 2 || resets != 1 {
				t.Errorf("server served %v with %d resets, want two GETs, the first reset", served, resets)
			}
		})
	}
}

// inspectingTransport passes requests to a real transport and keeps what
// the client handed it.
type inspectingTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs []*http.Request
}

func (it *inspectingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	it.mu.Lock()
	it.reqs = append(it.reqs, r)
	it.mu.Unlock()
	return it.next.RoundTrip(r)
}

// TestPreviewRequestGivesTransportsNothingToReplay checks what every
// transport (HTTP/1 and HTTP/2) decides a replay on: a request with a body
// and no GetBody, and without an Idempotency-Key, is never re-sent after
// its body was read.
func TestPreviewRequestGivesTransportsNothingToReplay(t *testing.T) {
	_, base := newStubServer(t, replyWith(200, nil, previewJobBody))
	it := &inspectingTransport{next: http.DefaultTransport.(*http.Transport).Clone()}
	c := newClient(t, base, func(o *csm.Options) { o.Transport = it })
	if _, err := c.RequestPreview(t.Context(), legacyCode, turboParams(legacyCode, 0)); err != nil {
		t.Fatalf("RequestPreview: %v", err)
	}
	it.mu.Lock()
	defer it.mu.Unlock()
	if len(it.reqs) != 1 {
		t.Fatalf("transport saw %d requests, want 1", len(it.reqs))
	}
	r := it.reqs[0]
	if r.GetBody != nil {
		t.Error("the preview POST has a GetBody: a transport can rewind and replay it")
	}
	if r.ContentLength <= 0 {
		t.Errorf("ContentLength = %d, want the body's length", r.ContentLength)
	}
	for _, h := range []string{"Idempotency-Key", "X-Idempotency-Key"} {
		if _, ok := r.Header[h]; ok {
			t.Errorf("the preview POST carries %s: net/http treats it as idempotent", h)
		}
	}
}
