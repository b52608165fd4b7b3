package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// TestReadmeQuotesTheExample keeps the TypeScript of the README, of the
// pages in docs/ and of the example frontend's own README true to the
// example, which the browser test runs: a block that opens with the comment
// "// <path>" is that whole file of examples/nextjs, and any other block is
// an excerpt found in one of its files (indentation aside).
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
	docs, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	names := append([]string{"README.md", filepath.Join(root, "README.md")}, docs...)
	total := 0
	for _, name := range names {
		readme, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		blocks := regexp.MustCompile("(?s)```tsx?\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
		total += len(blocks)
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
	// The example's README and docs/auth.md and docs/live-updates.md quote
	// a dozen blocks between them: a few means the pattern no longer sees them.
	if total < 3 {
		t.Fatalf("found %d TypeScript blocks in %s, want at least 3: the test no longer sees them", total, strings.Join(names, ", "))
	}
}

// TestDocsLinksResolve checks every relative link of the README, the pages
// in docs/ and bench/README.md: [text](path) must name a file or directory
// of the repository, and [text](path#anchor) or [text](#anchor) a heading of
// that Markdown file, by the anchor GitHub makes of it. Links in code are
// not links, and links with a scheme (https:, mailto:) are not checked.
func TestDocsLinksResolve(t *testing.T) {
	t.Parallel()
	docs, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	names := append([]string{"README.md", filepath.Join("bench", "README.md")}, docs...)
	anchors := map[string]map[string]bool{} // by file, the anchors of its headings
	anchorsOf := func(path string) (map[string]bool, error) {
		if a, ok := anchors[path]; ok {
			return a, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		anchors[path] = headingAnchors(string(b))
		return anchors[path], nil
	}
	link := regexp.MustCompile(`\[[^\]]*\]\(([^()\s]+)(?:\s+"[^"]*")?\)`)
	scheme := regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	checked := 0
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(withoutCode(string(b)), -1) {
			target := m[1]
			if scheme.MatchString(target) {
				continue
			}
			checked++
			path, anchor, _ := strings.Cut(target, "#")
			file := name
			if path != "" {
				file = filepath.Join(filepath.Dir(name), filepath.FromSlash(path))
			}
			if _, err := os.Stat(file); err != nil {
				t.Errorf("%s links to %s, which does not exist", name, target)
				continue
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(file, ".md") {
				t.Errorf("%s links to %s: an anchor in a file that is not Markdown", name, target)
				continue
			}
			a, err := anchorsOf(file)
			if err != nil {
				t.Fatal(err)
			}
			if !a[anchor] {
				t.Errorf("%s links to %s, and %s has no heading with the anchor %q", name, target, file, anchor)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d relative links, want at least 20: the pattern no longer sees them", checked)
	}
}

// withoutCode returns a Markdown text without its fenced code blocks and
// inline code spans, where a link is text, not a link.
func withoutCode(md string) string {
	var out []string
	fenced := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			out = append(out, line)
		}
	}
	return regexp.MustCompile("`[^`]*`").ReplaceAllString(strings.Join(out, "\n"), "")
}

// headingAnchors returns the anchors GitHub gives the headings of a Markdown
// text: the heading in lower case, without what is neither a letter, a
// digit, a space, a hyphen nor an underscore, with each space a hyphen; a
// second heading with the same anchor gets "-1", a third "-2".
func headingAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		text, ok := strings.CutPrefix(line, "#")
		if fenced || !ok {
			continue
		}
		text = strings.TrimLeft(text, "#")
		if text != "" && text[0] != ' ' {
			continue // #hashtag, not a heading
		}
		var slug strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(strings.TrimRight(strings.TrimSpace(text), "#"))) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				slug.WriteRune(r)
			case r == ' ':
				slug.WriteByte('-')
			}
		}
		anchor := slug.String()
		if n := seen[anchor]; n > 0 {
			seen[anchor]++
			anchor += "-" + strconv.Itoa(n)
		} else {
			seen[anchor] = 1
		}
		anchors[anchor] = true
	}
	return anchors
}
