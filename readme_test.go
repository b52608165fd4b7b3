package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeQuotesTheExample keeps the TypeScript of the README and of the
// example frontend's own README true to the example, which the browser test
// runs: a block that opens with the comment "// <path>" is that whole file
// of examples/nextjs, and any other block is an excerpt found in one of its
// files (indentation aside).
func TestReadmeQuotesTheExample(t *testing.T) {
	t.Parallel()
	const root = "examples/nextjs"
	sources := map[string]string{}
	for _, dir := range []string{"app", "lib"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".ts") && !strings.HasSuffix(path, ".tsx") {
				return err
			}
			b, err := os.ReadFile(path)
			sources[path] = string(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// unindented drops each line's indentation and trailing spaces.
	unindented := func(s string) string {
		lines := strings.Split(strings.TrimSpace(s), "\n")
		for i, l := range lines {
			lines[i] = strings.TrimSpace(l)
		}
		return strings.Join(lines, "\n")
	}
	for _, name := range []string{"README.md", filepath.Join(root, "README.md")} {
		readme, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		blocks := regexp.MustCompile("(?s)```tsx?\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
		if len(blocks) < 3 {
			t.Fatalf("found %d TypeScript blocks in %s, want at least 3: the test no longer sees them", len(blocks), name)
		}
		for _, m := range blocks {
			block := m[1]
			first, rest, _ := strings.Cut(block, "\n")
			if path, ok := strings.CutPrefix(first, "// "); ok {
				if src, ok := sources[filepath.Join(root, path)]; ok {
					if strings.TrimSpace(rest) != strings.TrimSpace(src) {
						t.Errorf("%s quotes %s as a whole file, and it differs from %s; want them the same", name, path, filepath.Join(root, path))
					}
					continue
				}
			}
			found := false
			for _, src := range sources {
				found = found || strings.Contains(unindented(src), unindented(block))
			}
			if !found {
				t.Errorf("%s has a TypeScript block found in no file of %s, want each in one:\n%s", name, root, first)
			}
		}
	}
}
