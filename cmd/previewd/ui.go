package main

import (
	"go.uber.org/zap"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/config"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/ui"
	"github.com/previewd/previewd/webhook"
)

// newUI wires the job view: the producer's jobs, the store's counts, and
// mesh fetches under the webhooks' address policy and timeout.
func newUI(cfg config.Config, producer *tasks.Client, log *zap.Logger) *ui.UI {
	return ui.New(ui.Options{
		Jobs:          producer,
		Counts:        producer.Store(),
		Mesh:          webhook.NewSender(webhook.SenderOptions{Timeout: cfg.WebhookTimeout, AllowPrivate: cfg.WebhookAllowPrivate}),
		Namespace:     cfg.Namespace,
		Root:          api.UIPath,
		DashboardPath: api.DashboardPath,
		Logger:        log.Named("ui"),
	})
}
