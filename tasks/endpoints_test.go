package tasks_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

func TestAddEndpointValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, tasks.ClientOptions{})
	ctx := context.Background()
	good, _ := webhook.GenerateSecret()
	cases := []struct {
		name  string
		req   tasks.EndpointRequest
		field string // "" when valid
	}{
		{"valid, every event", tasks.EndpointRequest{URL: "https://8.8.8.8/hooks"}, ""},
		{"valid, chosen events and secret", tasks.EndpointRequest{URL: "https://8.8.8.8/hooks", EventTypes: []string{"preview.done", "preview.done"}, Secret: good}, ""},
		{"no url", tasks.EndpointRequest{}, "url"},
		{"ftp url", tasks.EndpointRequest{URL: "ftp://8.8.8.8/x"}, "url"},
		{"user info", tasks.EndpointRequest{URL: "https://u:p@8.8.8.8/x"}, "url"},
		{"loopback", tasks.EndpointRequest{URL: "http://127.0.0.1:8080/x"}, "url"},
		{"metadata", tasks.EndpointRequest{URL: "http://169.254.169.254/latest/meta-data"}, "url"},
		{"cgnat", tasks.EndpointRequest{URL: "http://100.100.100.200/x"}, "url"},
		{"decimal ip", tasks.EndpointRequest{URL: "http://2130706433/x"}, "url"},
		{"localhost", tasks.EndpointRequest{URL: "http://localhost/x"}, "url"},
		{"unknown event", tasks.EndpointRequest{URL: "https://8.8.8.8/x", EventTypes: []string{"preview.exploded"}}, "event_types"},
		{"bad secret", tasks.EndpointRequest{URL: "https://8.8.8.8/x", Secret: "whsec_short"}, "secret"},
		{"control characters", tasks.EndpointRequest{URL: "https://8.8.8.8/x", Description: "a\x00b"}, "description"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep, secret, err := e.c.AddEndpoint(ctx, tc.req)
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, perr := webhook.ParseSecret(secret); perr != nil || !ep.Enabled || !store.IsEndpointID(ep.ID) {
					t.Fatalf("endpoint %+v, secret usable: %v", ep, perr)
				}
				if tc.req.Secret != "" && secret != tc.req.Secret {
					t.Fatal("the given secret was not kept")
				}
				if len(ep.EventTypes) > 1 {
					t.Fatalf("duplicate event types kept: %v", ep.EventTypes)
				}
				return
			}
			v, ok := tasks.AsValidationError(err)
			if !ok || len(v.Fields) != 1 || v.Fields[0].Field != tc.field {
				t.Fatalf("err = %v, want a validation error on %s", err, tc.field)
			}
		})
	}
}

// TestEndpointSecretRotation: the old secret signs beside the new one for
// the rotation window, then only the new one does.
func TestEndpointSecretRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, tasks.ClientOptions{SecretRotationWindow: time.Hour})
	ctx := context.Background()
	ep, first, err := e.c.AddEndpoint(ctx, tasks.EndpointRequest{URL: "https://8.8.8.8/h"})
	if err != nil {
		t.Fatal(err)
	}
	_, second, err := e.c.RotateEndpointSecret(ctx, ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := e.c.Endpoint(ctx, ep.ID)
	if got := stored.ActiveSecrets(e.clock.Now()); !slices.Equal(got, []string{second, first}) {
		t.Fatalf("active secrets right after rotation: %d, want the new then the old", len(got))
	}
	e.clock.Advance(61 * time.Minute)
	if got := stored.ActiveSecrets(e.clock.Now()); !slices.Equal(got, []string{second}) {
		t.Fatalf("active secrets after the window: %d, want only the new", len(got))
	}
	// A second rotation drops secrets already expired.
	_, third, _ := e.c.RotateEndpointSecret(ctx, ep.ID)
	stored, _ = e.c.Endpoint(ctx, ep.ID)
	if len(stored.Secrets) != 2 || stored.Secrets[1].Value != third {
		t.Fatalf("after two rotations the endpoint keeps %d secrets", len(stored.Secrets))
	}
}

func TestEndpointLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, tasks.ClientOptions{})
	ctx := context.Background()
	a, _, _ := e.c.AddEndpoint(ctx, tasks.EndpointRequest{URL: "https://8.8.8.8/a"})
	e.clock.Advance(time.Second)
	b, _, _ := e.c.AddEndpoint(ctx, tasks.EndpointRequest{URL: "https://8.8.4.4/b", EventTypes: []string{"preview.done"}})
	list, err := e.c.Endpoints(ctx)
	if err != nil || len(list) != 2 || list[0].ID != a.ID || list[1].ID != b.ID {
		t.Fatalf("Endpoints = %v, %v", list, err)
	}
	if !b.Subscribed(store.EventDone) || b.Subscribed(store.EventProgress) || !a.Subscribed(store.EventProgress) {
		t.Fatal("subscriptions")
	}
	off, err := e.c.SetEndpointEnabled(ctx, a.ID, false, "")
	if err != nil || off.Enabled || off.DisabledReason == "" || off.DisabledAt == nil {
		t.Fatalf("disable: %+v, %v", off, err)
	}
	on, _ := e.c.SetEndpointEnabled(ctx, a.ID, true, "")
	if !on.Enabled || on.DisabledReason != "" || on.DisabledAt != nil {
		t.Fatalf("enable: %+v", on)
	}
	if err := e.c.DeleteEndpoint(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		e.c.DeleteEndpoint(ctx, a.ID),
		func() error { _, err := e.c.Endpoint(ctx, a.ID); return err }(),
		func() error { _, err := e.c.Endpoint(ctx, "not-an-id"); return err }(),
		func() error { _, _, err := e.c.RotateEndpointSecret(ctx, a.ID); return err }(),
	} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("on a deleted or invalid endpoint: %v, want ErrNotFound", err)
		}
	}
	if list, _ := e.c.Endpoints(ctx); len(list) != 1 {
		t.Fatalf("%d endpoints after a delete", len(list))
	}
}
