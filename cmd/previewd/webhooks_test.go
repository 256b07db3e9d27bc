package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// TestEndpointsCommands walks an endpoint through its whole life on the
// command line; its secret shows only when asked for.
func TestEndpointsCommands(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	c := newCLI(t, r, "http://127.0.0.1:9")
	rcv := testutil.NewReceiver(t)

	out, errOut, code := c.run("endpoints", "add", "--url", rcv.URL, "--events", "preview.done,preview.failed", "--description", "orders")
	if code != 0 {
		t.Fatalf("add: %d %s", code, errOut)
	}
	if strings.Contains(out, "whsec_") {
		t.Fatalf("add printed a secret without --show-secret:\n%s", out)
	}
	var ep struct {
		store.Endpoint
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(out), &ep); err != nil || ep.ID == "" || len(ep.EventTypes) != 2 || !ep.Enabled {
		t.Fatalf("add printed %s (%v)", out, err)
	}
	out, _, _ = c.run("endpoints", "add", "--url", rcv.URL, "--show-secret")
	if err := json.Unmarshal([]byte(out), &ep); err != nil || !strings.HasPrefix(ep.Secret, "whsec_") {
		t.Fatalf("add --show-secret printed %s", out)
	}
	secondID, secret := ep.ID, ep.Secret

	out, _, code = c.run("endpoints", "list")
	if code != 0 || !strings.Contains(out, secondID) || !strings.Contains(out, "preview.done,preview.failed") || strings.Contains(out, secret) {
		t.Fatalf("list:\n%s", out)
	}
	out, _, _ = c.run("endpoints", "list", "--json")
	var list []store.Endpoint
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 2 || strings.Contains(out, secret) {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	out, _, _ = c.run("endpoints", "show", secondID)
	if !strings.Contains(out, secondID) || strings.Contains(out, secret) {
		t.Fatalf("show:\n%s", out)
	}
	out, _, _ = c.run("endpoints", "disable", secondID, "--reason", "maintenance")
	if !strings.Contains(out, `"enabled": false`) || !strings.Contains(out, "maintenance") {
		t.Fatalf("disable:\n%s", out)
	}
	out, _, _ = c.run("endpoints", "enable", secondID)
	if !strings.Contains(out, `"enabled": true`) {
		t.Fatalf("enable:\n%s", out)
	}
	out, _, _ = c.run("endpoints", "rotate-secret", secondID)
	if strings.Contains(out, "whsec_") {
		t.Fatalf("rotate-secret printed a secret without --show-secret:\n%s", out)
	}
	out, _, _ = c.run("endpoints", "rotate-secret", secondID, "--show-secret")
	if err := json.Unmarshal([]byte(out), &ep); err != nil || ep.Secret == secret || !strings.HasPrefix(ep.Secret, "whsec_") {
		t.Fatalf("rotate-secret --show-secret: %s", out)
	}
	if _, _, code = c.run("endpoints", "delete", secondID); code != 0 {
		t.Fatal("delete failed")
	}
	if _, errOut, code = c.run("endpoints", "show", secondID); code != 1 || !strings.Contains(errOut, "not found") {
		t.Fatalf("show after delete: %d %s", code, errOut)
	}

	// Refused input names the flag and field.
	delete(c.env, "PREVIEWD_WEBHOOK_ALLOW_PRIVATE")
	for _, tc := range []struct{ args []string }{
		{[]string{"--url", "http://169.254.169.254/latest"}},
		{[]string{"--url", "http://127.0.0.1:8080/hook"}},
		{[]string{"--url", "https://user:pw@example.com/hook"}},
		{[]string{"--url", "https://8.8.8.8/h", "--events", "preview.exploded"}},
		{[]string{"--url", "https://8.8.8.8/h", "--secret", "not-a-secret"}},
	} {
		_, errOut, code := c.run(append([]string{"endpoints", "add"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, "invalid --") {
			t.Errorf("add %v: exit %d, %q", tc.args, code, errOut)
		}
	}
	if _, _, code := c.run("endpoints", "frobnicate"); code != exitUsage {
		t.Errorf("unknown endpoints subcommand exit %d", code)
	}
}

// TestWebhooksCommands shows a job's delivery attempts and replays one.
func TestWebhooksCommands(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	sim, simURL := testutil.NewSim(t, csmsim.Options{})
	rcv := testutil.NewReceiver(t)
	rcv.SetStatus(500)
	c := newCLI(t, r, simURL)
	c.env["PREVIEWD_WEBHOOK_RETRY_SCHEDULE"] = "1s"
	code := "SESSION_HOOKS_" + testutil.RandomHex(3)
	sim.AddSession(code, csmsim.SessionConfig{GenerationTime: time.Second})

	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"worker"}, &log, &log, func(k string) string { return c.env[k] }) }()
	defer func() { cancel(); <-done }()

	out, errOut, exit := c.run("enqueue", "--session", code, "--webhook-url", rcv.URL)
	if exit != 0 {
		t.Fatal(errOut)
	}
	var job store.Job
	_ = json.Unmarshal([]byte(out), &job)
	var msgs []store.Message
	testutil.Eventually(t, 20*time.Second, "every message to be given up", func() bool {
		out, _, _ := c.run("webhooks", "attempts", "--job", job.ID, "--json")
		msgs = nil
		_ = json.Unmarshal([]byte(out), &msgs)
		if len(msgs) < 2 {
			return false
		}
		for _, m := range msgs {
			if m.Status != store.MessageFailed {
				return false
			}
		}
		return true
	})
	out, _, _ = c.run("webhooks", "attempts", "--job", job.ID)
	if !strings.Contains(out, "MESSAGE") || !strings.Contains(out, msgs[0].ID) || !strings.Contains(out, "500") {
		t.Fatalf("attempts table:\n%s", out)
	}
	out, _, _ = c.run("webhooks", "attempts", "--message", msgs[0].ID, "--json")
	var one []store.Message
	if err := json.Unmarshal([]byte(out), &one); err != nil || len(one) != 1 || one[0].AttemptsN != 2 {
		t.Fatalf("attempts --message: %v %s", err, out)
	}

	rcv.SetStatus(200)
	out, errOut, exit = c.run("webhooks", "replay", "--job", job.ID)
	var replayed []store.Message
	if err := json.Unmarshal([]byte(out), &replayed); exit != 0 || err != nil || len(replayed) != len(msgs) {
		t.Fatalf("replay --job: exit %d %s %s", exit, out, errOut)
	}
	testutil.Eventually(t, 10*time.Second, "replays to be delivered", func() bool {
		out, _, _ := c.run("webhooks", "attempts", "--job", job.ID, "--json")
		_ = json.Unmarshal([]byte(out), &msgs)
		for _, m := range msgs {
			if m.Status != store.MessageDelivered {
				return false
			}
		}
		return true
	})
	// Nothing failed any more: a replay without --all sends nothing.
	out, _, _ = c.run("webhooks", "replay", "--job", job.ID)
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("replay of a delivered job without --all: %s", out)
	}
	if _, errOut, exit := c.run("webhooks", "replay"); exit != exitUsage {
		t.Fatalf("replay without a selection: %d %s", exit, errOut)
	}
}
