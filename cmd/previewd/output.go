package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/previewd/previewd/store"
)

// explicitOutput reports whether -o, --output or --json was given.
func (fs *flagSet) explicitOutput() bool {
	given := false
	fs.Visit(func(fl *flag.Flag) {
		given = given || fl.Name == "o" || fl.Name == "output" || fl.Name == "json"
	})
	return given
}

// printJob prints one job as JSON (indented, or on one line) or as a
// table row.
func printJob(w io.Writer, j store.Job, format string, indent bool) error {
	if format == "table" {
		return printJobTable(w, []store.Job{j}, time.Now())
	}
	return printJSON(w, j, indent)
}

// printJobTable prints jobs for people: one row each, ages against now.
func printJobTable(w io.Writer, jobs []store.Job, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tUPSTREAM\tPERCENT\tAGE\tSESSION\tEXTERNAL ID\tERROR")
	for _, j := range jobs {
		percent := "-"
		if j.PercentDone != nil {
			percent = fmt.Sprintf("%d%%", *j.PercentDone)
		}
		errText := "-"
		if j.Error != nil {
			errText = j.Error.Code
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Status, orDash(j.UpstreamStatus), percent,
			humanAge(now.Sub(j.CreatedAt)), j.SessionCode, orDash(j.ExternalID), errText)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// humanAge prints a duration the way kubectl prints ages: 45s, 12m, 3h20m,
// 2d5h.
func humanAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 10*time.Minute:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func printJSON(w io.Writer, v any, indent bool) error {
	enc := json.NewEncoder(w)
	if indent {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}
