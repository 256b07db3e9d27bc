package tasks_test

import (
	"context"
	"errors"
	"log"

	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/tasks"
)

// The README shows the body of this example; readme_test.go keeps the two
// identical.
func ExampleClient_RequestPreview() {
	ctx := context.Background()
	// README example start
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	previews := tasks.NewClient(rdb, tasks.ClientOptions{}) // same namespace and deadline as the workers

	job, err := previews.RequestPreview(ctx, tasks.PreviewRequest{
		SessionCode:       "SESSION_1689257215_1674078",
		SelectedSpinIndex: 0,
		ScaledBBox:        []float64{1, 1.5, 0.8},
		WebhookURL:        "https://api.example.com/hooks/csm-previews",
		ExternalID:        "asset-8812",
		IdempotencyKey:    "asset-8812-preview-1", // repeat-safe: same key, same job, one preview billed
	})
	var invalid *tasks.ValidationError
	switch {
	case errors.As(err, &invalid):
		for _, f := range invalid.Fields {
			log.Printf("bad %s: %s", f.Field, f.Message)
		}
		return
	case errors.Is(err, tasks.ErrIdempotencyConflict):
		log.Printf("key already used for a different request (job %s)", job.ID)
		return
	case err != nil:
		log.Printf("enqueue failed, safe to retry with the same key: %v", err)
		return
	}
	log.Printf("job %s is %s", job.ID, job.Status)
	// README example end
}
