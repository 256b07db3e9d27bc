package store

import (
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Endpoint is a webhook subscription registered by a team: every event of
// a subscribed type, of every job, is delivered to it, signed with its own
// secret.
type Endpoint struct {
	ID          string      `json:"id"`
	URL         string      `json:"url"`
	EventTypes  []EventType `json:"event_types"` // empty: every type
	Description string      `json:"description,omitempty"`
	// SignatureVersion is how deliveries are signed: "v1" (HMAC-SHA256,
	// whsec_ secrets) or "v1a" (ed25519, whsk_ keys whose whpk_ public
	// key the receiver holds). Records written before v1a read as "v1".
	SignatureVersion string     `json:"signature_version"`
	Enabled          bool       `json:"enabled"`
	DisabledReason   string     `json:"disabled_reason,omitempty"`
	DisabledAt       *time.Time `json:"disabled_at,omitempty"`
	// FailingSince is the first failed attempt since the last success.
	FailingSince *time.Time `json:"failing_since,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
	// Secrets are never part of the endpoint's JSON: they are stored apart
	// and returned only by an explicit request.
	Secrets []EndpointSecret `json:"-"`
}

// Signature versions of an endpoint.
const (
	SignatureV1  = "v1"
	SignatureV1a = "v1a"
)

// EndpointSecret is one signing secret of an endpoint: a whsec_ secret, or
// for a v1a endpoint a whsk_ private key. The current secret has no
// expiry; a rotated-out one signs alongside it until it expires.
type EndpointSecret struct {
	Value     string     `json:"value"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Subscribed reports whether the endpoint wants events of type t.
func (e Endpoint) Subscribed(t EventType) bool {
	return len(e.EventTypes) == 0 || slices.Contains(e.EventTypes, t)
}

// ActiveSecrets returns the secrets that sign at time now, newest first.
func (e Endpoint) ActiveSecrets(now time.Time) []string {
	var out []string
	for i := len(e.Secrets) - 1; i >= 0; i-- {
		s := e.Secrets[i]
		if s.ExpiresAt == nil || now.Before(*s.ExpiresAt) {
			out = append(out, s.Value)
		}
	}
	return out
}

// Disable disables the endpoint with a reason; it stays so until enabled.
func (e *Endpoint) Disable(now time.Time, reason string) {
	if !e.Enabled {
		return
	}
	e.Enabled = false
	e.DisabledReason = reason
	e.DisabledAt = &now
}

// IsEndpointID reports whether s looks like an endpoint id.
func IsEndpointID(s string) bool {
	if !strings.HasPrefix(s, "ep_") || len(s) != len("ep_")+32 {
		return false
	}
	for _, r := range s[3:] {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

func (s *Store) endpointKey(id string) string { return s.ns + ":endpoint:{" + id + "}" }
func (s *Store) endpointMessagesKey(id string) string {
	return s.ns + ":endpoint:{" + id + "}:messages"
}
func (s *Store) endpointIndexKey() string { return s.ns + ":index:endpoints" }

//go:embed lua/index_endpoint.lua
var indexEndpointSource string

var indexEndpointScript = redis.NewScript(indexEndpointSource)

// ErrEndpointLimit: the endpoint index already holds as many endpoints as
// the cap allows.
var ErrEndpointLimit = errors.New("endpoint limit reached")

// CreateEndpoint stores a new endpoint, unless max endpoints exist already
// (ErrEndpointLimit). The cap is checked in the command that adds the
// endpoint to the index (index_endpoint.lua), so concurrent creators never
// pass it together.
//
// The record is written first, then indexed: the index is what listings,
// fan-outs and the cap see, so a record whose indexing failed or was
// refused is invisible. A refused one is deleted at once; one left by a
// crash between the two writes stays unseen and harmless.
func (s *Store) CreateEndpoint(ctx context.Context, e Endpoint, max int) error {
	if max < 1 {
		return fmt.Errorf("create endpoint %s: the cap must be at least 1, got %d", e.ID, max)
	}
	doc, secrets, err := encodeEndpoint(e)
	if err != nil {
		return err
	}
	// Ids are 128 random bits: no need to guard against an existing one.
	if err := s.rdb.HSet(ctx, s.endpointKey(e.ID), "doc", doc, "secrets", secrets).Err(); err != nil {
		return fmt.Errorf("create endpoint %s: %w", e.ID, err)
	}
	added, err := indexEndpointScript.Run(ctx, s.rdb, []string{s.endpointIndexKey()}, e.ID, max).Int()
	if err != nil {
		return fmt.Errorf("index endpoint %s: %w", e.ID, err)
	}
	if added == 0 {
		if err := s.rdb.Del(ctx, s.endpointKey(e.ID)).Err(); err != nil {
			return fmt.Errorf("endpoint %s: %w (and its unindexed record stays: %w)", e.ID, ErrEndpointLimit, err)
		}
		return fmt.Errorf("endpoint %s: %w", e.ID, ErrEndpointLimit)
	}
	return nil
}

func encodeEndpoint(e Endpoint) (doc, secrets []byte, err error) {
	if doc, err = json.Marshal(e); err != nil {
		return nil, nil, fmt.Errorf("encode endpoint %s: %w", e.ID, err)
	}
	if secrets, err = json.Marshal(e.Secrets); err != nil {
		return nil, nil, fmt.Errorf("encode endpoint %s secrets: %w", e.ID, err)
	}
	return doc, secrets, nil
}

// Endpoint returns an endpoint with its secrets, or ErrNotFound.
func (s *Store) Endpoint(ctx context.Context, id string) (Endpoint, error) {
	vals, err := s.rdb.HMGet(ctx, s.endpointKey(id), "doc", "secrets").Result()
	if err != nil {
		return Endpoint{}, fmt.Errorf("read endpoint %s: %w", id, err)
	}
	return decodeEndpoint(id, vals)
}

func decodeEndpoint(id string, vals []any) (Endpoint, error) {
	doc, _ := vals[0].(string)
	if doc == "" {
		return Endpoint{}, fmt.Errorf("endpoint %s: %w", id, ErrNotFound)
	}
	var e Endpoint
	if err := json.Unmarshal([]byte(doc), &e); err != nil {
		return Endpoint{}, fmt.Errorf("decode endpoint %s: %w", id, err)
	}
	if e.SignatureVersion == "" {
		e.SignatureVersion = SignatureV1
	}
	if secrets, _ := vals[1].(string); secrets != "" {
		if err := json.Unmarshal([]byte(secrets), &e.Secrets); err != nil {
			return Endpoint{}, fmt.Errorf("decode endpoint %s secrets: %w", id, err)
		}
	}
	return e, nil
}

// Endpoints returns every endpoint, oldest first. There are at most as
// many as the cap CreateEndpoint enforces.
func (s *Store) Endpoints(ctx context.Context) ([]Endpoint, error) {
	ids, err := s.rdb.SMembers(ctx, s.endpointIndexKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	return s.EndpointsIn(ctx, ids)
}

// EndpointsIn returns the endpoints of an endpoint set read earlier
// (JobRead.EndpointIDs), oldest first, as they are now: those deleted
// since are left out, those disabled since read as disabled. With no ids
// it makes no round trip.
func (s *Store) EndpointsIn(ctx context.Context, ids []string) ([]Endpoint, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	out, err := s.endpointsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// readEndpointIDsIn queues the read of the endpoint set in a pipeline.
func (s *Store) readEndpointIDsIn(ctx context.Context, p redis.Pipeliner) *redis.StringSliceCmd {
	return p.SMembers(ctx, s.endpointIndexKey())
}

// endpointsByID reads the endpoints with the given ids in one round trip,
// in order, skipping those deleted since they were indexed.
func (s *Store) endpointsByID(ctx context.Context, ids []string) ([]Endpoint, error) {
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, s.endpointKey(id), "doc", "secrets")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read endpoints: %w", err)
	}
	out := make([]Endpoint, 0, len(ids))
	for i, id := range ids {
		e, err := decodeEndpoint(id, cmds[i].Val())
		if errors.Is(err, ErrNotFound) {
			continue // deleted between the two reads
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// EndpointListOptions select a page of endpoints.
type EndpointListOptions struct {
	Limit  int    // 1..200; default 50
	Cursor string // from the previous page; "" for the first
}

// EndpointPage returns a page of endpoints in id order and the cursor of
// the next page ("" when this is the last). Paging by id (the cursor is
// the last id returned) sees every endpoint that exists throughout the
// walk exactly once, whatever is created or deleted meanwhile; ids are
// random, so the order is stable but not that of creation.
//
// The index is one set of at most the cap's ids; a page reads all ids
// (cheap: 35 bytes each) but only its own records.
func (s *Store) EndpointPage(ctx context.Context, opts EndpointListOptions) ([]Endpoint, string, error) {
	if opts.Limit <= 0 {
		opts.Limit = 50
	}
	opts.Limit = min(opts.Limit, 200)
	after := ""
	if opts.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(opts.Cursor)
		if err != nil || !IsEndpointID(string(raw)) {
			return nil, "", ErrBadCursor
		}
		after = string(raw)
	}
	ids, err := s.rdb.SMembers(ctx, s.endpointIndexKey()).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list endpoints: %w", err)
	}
	slices.Sort(ids)
	rest := ids[sort.Search(len(ids), func(i int) bool { return ids[i] > after }):]
	var out []Endpoint
	for len(rest) > 0 && len(out) < opts.Limit {
		batch := rest[:min(len(rest), opts.Limit-len(out))]
		rest = rest[len(batch):]
		eps, err := s.endpointsByID(ctx, batch)
		if err != nil {
			return nil, "", err
		}
		out = append(out, eps...)
	}
	if len(rest) == 0 || len(out) == 0 {
		return out, "", nil
	}
	return out, base64.RawURLEncoding.EncodeToString([]byte(out[len(out)-1].ID)), nil
}

// UpdateEndpoint applies fn to an endpoint and writes the result if no one
// changed the endpoint meanwhile (WATCH/MULTI on its single key), retrying
// otherwise. fn may return ErrNoChange.
func (s *Store) UpdateEndpoint(ctx context.Context, id string, fn func(e *Endpoint, now time.Time) error) (Endpoint, error) {
	key := s.endpointKey(id)
	var out Endpoint
	for range maxUpdateAttempts {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			vals, err := tx.HMGet(ctx, key, "doc", "secrets").Result()
			if err != nil {
				return err
			}
			e, err := decodeEndpoint(id, vals)
			if err != nil {
				return err
			}
			now := s.now()
			if err := fn(&e, now); err != nil {
				out = e
				return err
			}
			e.UpdatedAt = now
			doc, secrets, err := encodeEndpoint(e)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, key, "doc", doc, "secrets", secrets)
				return nil
			})
			out = e
			return err
		}, key)
		switch {
		case errors.Is(err, redis.TxFailedErr):
			continue
		case errors.Is(err, ErrNoChange):
			return out, nil
		case err != nil:
			return out, fmt.Errorf("update endpoint %s: %w", id, err)
		}
		return out, nil
	}
	return Endpoint{}, fmt.Errorf("update endpoint %s: %w", id, ErrContention)
}

// DeleteEndpoint removes an endpoint and its message index.
func (s *Store) DeleteEndpoint(ctx context.Context, id string) error {
	n, err := s.rdb.Del(ctx, s.endpointKey(id), s.endpointMessagesKey(id)).Result()
	if err != nil {
		return fmt.Errorf("delete endpoint %s: %w", id, err)
	}
	if err := s.rdb.SRem(ctx, s.endpointIndexKey(), id).Err(); err != nil {
		return fmt.Errorf("unindex endpoint %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("endpoint %s: %w", id, ErrNotFound)
	}
	return nil
}

// IndexEndpointMessage records that a message was addressed to an
// endpoint, for replays by endpoint and time. Entries older than the
// retention period are trimmed on the way, so the index stays bounded.
func (s *Store) IndexEndpointMessage(ctx context.Context, endpointID, msgID string, at time.Time) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.indexEndpointMessageIn(ctx, p, endpointID, msgID, at)
		return nil
	})
	if err != nil {
		return fmt.Errorf("index message %s of endpoint %s: %w", msgID, endpointID, err)
	}
	return nil
}

func (s *Store) indexEndpointMessageIn(ctx context.Context, p redis.Pipeliner, endpointID, msgID string, at time.Time) {
	key := s.endpointMessagesKey(endpointID)
	p.ZAdd(ctx, key, redis.Z{Score: float64(at.UnixMilli()), Member: msgID})
	p.ZRemRangeByScore(ctx, key, "-inf", fmt.Sprint(at.Add(-s.retention).UnixMilli()))
}

// EndpointMessages returns the ids of messages addressed to an endpoint
// since the given time, oldest first.
func (s *Store) EndpointMessages(ctx context.Context, endpointID string, since time.Time) ([]string, error) {
	ids, err := s.rdb.ZRangeByScore(ctx, s.endpointMessagesKey(endpointID), &redis.ZRangeBy{
		Min: fmt.Sprint(since.UnixMilli()), Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read messages of endpoint %s: %w", endpointID, err)
	}
	return ids, nil
}
