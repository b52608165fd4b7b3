package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"testing"
)

// TestLimitsAgree fails when schema.sql's CHECK constraints or openapi.json's
// maxLength, maxItems and maximum disagree with the limits in limits.go.
func TestLimitsAgree(t *testing.T) {
	t.Parallel()
	schema, err := os.ReadFile("schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		pattern string
		want    int
	}{
		{`char_length\(title\) BETWEEN 1 AND (\d+)`, maxTitle},
		{`char_length\(description\) <= (\d+)`, maxDescription},
		{`cardinality\(tags\) <= (\d+)`, maxTags},
		{`char_length\(t\) BETWEEN 1 AND (\d+)`, maxTag},
		{`char_length\(id\) BETWEEN 1 AND (\d+)`, maxUserID},
		{`char_length\(key\) BETWEEN 1 AND (\d+)`, maxIdempotencyKey},
	} {
		m := regexp.MustCompile(c.pattern).FindAllSubmatch(schema, -1)
		if len(m) != 1 {
			t.Errorf("schema.sql: %d matches of %s, want 1", len(m), c.pattern)
			continue
		}
		if got, _ := strconv.Atoi(string(m[0][1])); got != c.want {
			t.Errorf("schema.sql: %s has %d, want %d", c.pattern, got, c.want)
		}
	}

	// Every limit in openapi.json, by where it is: a schema property
	// (prop:title), a parameter (param:q), [] for an array's items.
	want := map[string]int{
		"prop:title maxLength": maxTitle, "prop:description maxLength": maxDescription,
		"prop:tags maxItems": maxTags, "prop:tags[] maxLength": maxTag, "prop:user_id maxLength": maxUserID,
		"param:user_id maxLength": maxUserID, "param:Idempotency-Key maxLength": maxIdempotencyKey,
		"param:q maxLength": maxQuery, "param:search maxLength": maxQuery, "param:tag[] maxLength": maxTag, "param:limit maximum": maxLimit,
	}
	var doc any
	if err := json.Unmarshal([]byte(openAPIDocument), &doc); err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch v := v.(type) {
		case []any:
			for _, x := range v {
				walk(x, where)
			}
		case map[string]any:
			if name, ok := v["name"].(string); ok && v["in"] != nil {
				where = "param:" + name
			}
			for _, k := range []string{"maxLength", "maxItems", "maximum"} {
				n, ok := v[k].(float64)
				if !ok {
					continue
				}
				key := where + " " + k
				limit, known := want[key]
				switch {
				case !known:
					t.Errorf("openapi.json: %s is %v, a limit that limits.go does not know", key, n)
				case int(n) != limit:
					t.Errorf("openapi.json: %s is %v, want %d", key, n, limit)
				}
				found[key] = true
			}
			for k, x := range v {
				switch {
				case k == "properties":
					for name, p := range x.(map[string]any) {
						walk(p, "prop:"+name)
					}
				case k == "items":
					walk(x, where+"[]")
				default:
					walk(x, where)
				}
			}
		}
	}
	walk(doc, "")
	for key := range want {
		if !found[key] {
			t.Errorf("openapi.json has no %s; want %d", key, want[key])
		}
	}
}
