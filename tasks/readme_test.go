package tasks_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeExampleCompiles keeps the README's Go example identical to the
// body of ExampleClient_RequestPreview, which the compiler checks.
func TestReadmeExampleCompiles(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)<!-- example: tasks/example_test.go -->\\s*```go\\n(.*?)```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("README has no Go example marked <!-- example: tasks/example_test.go -->")
	}
	body := regexp.MustCompile(`(?s)// README example start\n(.*?)\s*// README example end`).FindSubmatch(example)
	if body == nil {
		t.Fatal("example_test.go lacks its README markers")
	}
	if normalize(string(block[1])) != normalize(string(body[1])) {
		t.Fatalf("the README example differs from example_test.go; README has:\n%s\nexample has:\n%s", block[1], body[1])
	}
}

// normalize drops indentation and blank lines.
func normalize(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
