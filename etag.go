// This file is about entity tags: a task's ETag, and the If-Match and
// If-None-Match headers that name them (RFC 9110, section 13.1).

package main

import (
	"strconv"
	"strings"
)

// etag is the strong entity tag of a task: its version, quoted.
func etag(t Task) string {
	return `"` + strconv.FormatInt(t.Version, 10) + `"`
}

// parseIfMatch reads If-Match headers (RFC 9110, section 13.1.1) into the
// versions they accept: nil for none or "*", which put no condition on the
// write (a missing task is a 404 either way). Weak tags never match, by the
// strong comparison If-Match requires, and neither do tags that are not
// versions, so a list of only those accepts nothing: 412.
func parseIfMatch(values []string) ([]int64, error) {
	if len(values) == 0 {
		return nil, nil
	}
	accepted := []int64{}
	for _, tag := range splitETags(values) {
		switch {
		case tag == "*":
			return nil, nil
		case strings.HasPrefix(tag, "W/") && isQuoted(tag[2:]):
			// weak: never matches
		case isQuoted(tag):
			if v, err := strconv.ParseInt(tag[1:len(tag)-1], 10, 64); err == nil {
				accepted = append(accepted, v)
			}
		default:
			return nil, badRequest(`The If-Match header must be "*" or entity tags such as "3" (with the quotes).`)
		}
	}
	return accepted, nil
}

// noneMatchHits reports whether an If-None-Match header names version, by
// the weak comparison it calls for, or is "*".
func noneMatchHits(header string, version int64) bool {
	want := strconv.FormatInt(version, 10)
	for _, tag := range splitETags([]string{header}) {
		tag = strings.TrimPrefix(tag, "W/")
		if tag == "*" || isQuoted(tag) && tag[1:len(tag)-1] == want {
			return true
		}
	}
	return false
}

// splitETags splits comma-separated entity tags.
func splitETags(values []string) []string {
	var tags []string
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			if tag = strings.TrimSpace(tag); tag != "" {
				tags = append(tags, tag)
			}
		}
	}
	return tags
}

func isQuoted(s string) bool {
	return len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"'
}
