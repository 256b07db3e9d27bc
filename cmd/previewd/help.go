package main

import (
	"flag"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// helpWidth is the width help text is wrapped to.
const helpWidth = 80

// writeHelp prints the command's help: its usage line, what it does, its
// own flags, then where the shared settings are described. Flags are
// spelled as the README spells them: --name, and -x for a one-letter one.
func (fs *flagSet) writeHelp(w io.Writer) {
	fmt.Fprintf(w, "usage: previewd %s %s\n\n", fs.name, fs.synopsis)
	if fs.about != "" {
		writeWrapped(w, fs.about, 0)
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "Flags:")
	writeFlagRows(w, fs.rows())
	if fs.own != nil && fs.extra == nil {
		fmt.Fprintln(w)
		writeWrapped(w, "Shared settings (Redis, namespace, logging, ...) are PREVIEWD_* environment variables, each also a flag of every command (--redis-url URL): run 'previewd config --help' for the list.", 0)
	}
	if fs.extra != nil {
		fmt.Fprintln(w)
		fs.extra(w)
	}
}

// rows describes the command's own flags, aliases beside their long name,
// and --help last.
func (fs *flagSet) rows() []flagRow {
	short := map[string]string{}
	for s, long := range fs.aliases {
		short[long] = s
	}
	var rows []flagRow
	// A long flag without a short one lines up with the long ones that
	// have one: "-o, --output" above "    --json".
	pad := ""
	if len(short) > 0 {
		pad = "    "
	}
	fs.VisitAll(func(fl *flag.Flag) {
		if fs.own != nil && !fs.own[fl.Name] {
			return
		}
		if _, isAlias := fs.aliases[fl.Name]; isAlias {
			return
		}
		names := pad + dashed(fl.Name)
		if s, ok := short[fl.Name]; ok {
			names = dashed(s) + ", " + dashed(fl.Name)
		}
		placeholder, usage := flag.UnquoteUsage(fl)
		if placeholder != "" {
			names += " " + placeholder
		}
		switch fl.DefValue {
		case "", "0", "false", "0s":
		default:
			usage += fmt.Sprintf(" (default %s)", fl.DefValue)
		}
		rows = append(rows, flagRow{names, usage})
	})
	return append(rows, flagRow{"-h, --help", "show this help"})
}

// flagRow is one line of a help's flag or command list.
type flagRow struct{ names, text string }

// writeFlagRows prints rows in two columns, the text wrapped; a name too
// long for the first column puts its text on the next line.
func writeFlagRows(w io.Writer, rows []flagRow) {
	const maxCol = 26
	col := 0
	for _, r := range rows {
		if n := len(r.names); n > col && n <= maxCol {
			col = n
		}
	}
	for _, r := range rows {
		if len(r.names) > col {
			fmt.Fprintf(w, "  %s\n", r.names)
			writeWrapped(w, r.text, col+4)
			continue
		}
		lines := wrap(r.text, helpWidth-col-4)
		for i, line := range lines {
			if i == 0 {
				fmt.Fprintf(w, "  %-*s  %s\n", col, r.names, line)
			} else {
				fmt.Fprintf(w, "%*s%s\n", col+4, "", line)
			}
		}
	}
}

// writeWrapped prints text wrapped to helpWidth, indented.
func writeWrapped(w io.Writer, text string, indent int) {
	for _, line := range wrap(text, helpWidth-indent) {
		fmt.Fprintf(w, "%*s%s\n", indent, "", line)
	}
}

// wrap breaks text into lines of at most width characters (a longer word
// has a line of its own); "\n" starts a new line.
func wrap(text string, width int) []string {
	var out []string
	for para := range strings.SplitSeq(text, "\n") {
		line := ""
		for _, word := range strings.Fields(para) {
			switch {
			case line == "":
				line = word
			case len(line)+1+len(word) > width:
				out = append(out, line)
				line = word
			default:
				line += " " + word
			}
		}
		out = append(out, line)
	}
	return out
}

func isBoolFlag(fl *flag.Flag) bool {
	b, ok := fl.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// dashed spells a flag name as typed: -o, --output.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

var (
	flagNameError  = regexp.MustCompile(`^(flag provided but not defined|flag needs an argument): -(.+)$`)
	flagValueError = regexp.MustCompile(`^invalid (?:boolean )?value (".*") for (?:flag )?-([^:]+): (.*)$`)
)

// flagErrorText rewrites the flag package's error in the README's
// spelling: "unknown flag --foo", "invalid value "x" for --limit: ...".
func flagErrorText(err error) string {
	msg := err.Error()
	if m := flagNameError.FindStringSubmatch(msg); m != nil {
		if m[1] == "flag needs an argument" {
			return dashed(m[2]) + " needs a value"
		}
		return "unknown flag " + dashed(m[2])
	}
	if m := flagValueError.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("invalid value %s for %s: %s", m[1], dashed(m[2]), m[3])
	}
	return msg
}

// outputValue is the value of -o/--output.
type outputValue struct{ format string }

func (v *outputValue) String() string { return v.format }
func (v *outputValue) Set(s string) error {
	switch s {
	case "json", "table":
		v.format = s
		return nil
	}
	return fmt.Errorf("want json or table")
}

// addOutput adds -o/--output json|table and --json (short for -o json) to
// fs; it returns the chosen format, def unless one is given.
func addOutput(fs *flagSet, def string) *string {
	v := &outputValue{format: def}
	fs.Var(v, "output", "print `FORMAT`: json or table")
	fs.Var(v, "o", "short for --output")
	fs.aliases["o"] = "output"
	fs.BoolFunc("json", "short for -o json", func(s string) error {
		on, err := strconv.ParseBool(s)
		if on {
			v.format = "json"
		}
		return err
	})
	return &v.format
}
