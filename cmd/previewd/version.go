package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/previewd/previewd/internal/buildinfo"
)

func cmdVersion(_ context.Context, e env, args []string) error {
	fs := newFlagSet(e, "version", "[-o json] [flags]",
		"Print previewd's version, the commit it was built from, and its Go and asynq versions (the labels of the previewd_build_info metric).")
	output := addOutput(fs, "table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	info := buildinfo.Read()
	if *output == "json" {
		return printJSON(e.stdout, info, true)
	}
	commit := info.Commit
	if info.Modified {
		commit += " (modified)"
	}
	_, err := fmt.Fprintf(e.stdout, "previewd %s\ncommit:  %s\ngo:      %s\nasynq:   %s\n", info.Version, commit, info.GoVersion, info.Asynq)
	return err
}

// cmdHealthcheck is the healthcheck of images without a shell or curl
// (distroless): `previewd healthcheck --url http://127.0.0.1:8080/readyz`.
func cmdHealthcheck(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "healthcheck", "--url URL [--timeout D]",
		"GET the URL and exit 0 when it answers 2xx, else exit 1 with one line on stderr. Prints nothing on success. For container healthchecks (docker compose, Kubernetes exec probes) in images without a shell or curl. Reads no settings and never touches Redis.")
	rawURL := fs.String("url", "", "the `URL` to GET, e.g. http://127.0.0.1:8080/readyz (required)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after `D`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	u, err := url.Parse(*rawURL)
	switch {
	case *rawURL == "":
		return fs.usageError("--url is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fs.usageError("invalid --url: must be an absolute http or https URL")
	case *timeout <= 0:
		return fs.usageError("invalid --timeout: must be positive")
	}
	return healthcheck(ctx, u, *timeout)
}

// healthcheck GETs u once, without a proxy (the process checks itself or a
// neighbour), and says in one line why the answer is not healthy.
func healthcheck(ctx context.Context, u *url.URL, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	where := u.Redacted()
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // it quotes the URL, password included
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("GET %s: no answer within %s", where, timeout)
		}
		return fmt.Errorf("GET %s: %v", where, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", where, resp.Status)
	}
	return nil
}
