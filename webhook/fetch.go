package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// ErrTooLarge: a fetched body is larger than the caller allows.
var ErrTooLarge = errors.New("response body too large")

// Fetch GETs rawURL under the same address policy as a delivery (see
// SendTo): the URL is checked, its host resolved once, and the connection
// made to that address only, refused unless public (AllowPrivate aside).
// Redirects are not followed. It returns at most maxBytes of body, or
// ErrTooLarge when the body is longer, and the response's Content-Type.
// Errors never carry the URL (its query may hold a signed token).
func (s *Sender) Fetch(ctx context.Context, rawURL string, maxBytes int64) ([]byte, string, error) {
	t, err := s.Target(rawURL)
	if err != nil {
		return nil, "", err
	}
	if t, err = s.Resolve(ctx, t); err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, pinKey{}, t)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return nil, "", &DeliveryError{Err: errors.New("cannot build request")}
	}
	req.Header.Set("User-Agent", s.userAgent)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, "", transportError(err, t.Addr)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", &DeliveryError{StatusCode: resp.StatusCode}
	}
	if resp.ContentLength > maxBytes {
		return nil, "", fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, resp.ContentLength, maxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err != nil {
		return nil, "", transportError(err, t.Addr)
	}
	if int64(len(body)) > maxBytes {
		return nil, "", fmt.Errorf("%w: more than %d bytes", ErrTooLarge, maxBytes)
	}
	return body, resp.Header.Get("Content-Type"), nil
}
