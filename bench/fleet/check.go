// This file reads what the run is checked against: the database itself
// (through psql) and Prometheus.

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// psql runs a query on the database directly and returns its rows.
func (f *fleet) psql(query string) ([]string, error) {
	out, err := exec.Command(f.pgbin+"/psql", "-X", "-At", "-h", "127.0.0.1", "-p", strconv.Itoa(f.pgPort),
		"-U", "taskapi", "-d", "postgres", "-c", query).Output()
	if err != nil {
		return nil, fmt.Errorf("psql: %w", err)
	}
	return strings.Fields(string(out)), nil
}

// history returns each user's change positions, in order.
func (f *fleet) history(prefix string) (map[string][]int64, error) {
	rows, err := f.psql(fmt.Sprintf("SELECT user_id || '|' || position FROM task_changes WHERE user_id LIKE '%s%%' ORDER BY position", prefix))
	if err != nil {
		return nil, err
	}
	h := map[string][]int64{}
	for _, r := range rows {
		user, pos, _ := strings.Cut(r, "|")
		n, _ := strconv.ParseInt(pos, 10, 64)
		h[user] = append(h[user], n)
	}
	return h, nil
}

// taskIDs returns the ids of the tasks of users whose id begins with prefix.
func (f *fleet) taskIDs(prefix string) (map[string]bool, error) {
	rows, err := f.psql(fmt.Sprintf("SELECT id FROM tasks WHERE user_id LIKE '%s%%'", prefix))
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, r := range rows {
		ids[r] = true
	}
	return ids, nil
}

// promQuery returns the result of an instant query on Prometheus.
func (f *fleet) promQuery(query string) ([]promSample, error) {
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s", f.promPort, url.QueryEscape(query)))
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return nil, err
	}
	var out []promSample
	for _, s := range r.Data.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		out = append(out, promSample{s.Metric, v})
	}
	return out, nil
}

// promSample is one value of a query's result, with its labels.
type promSample struct {
	labels map[string]string
	value  float64
}

// promSum returns a query's one value, or -1.
func (f *fleet) promSum(query string) float64 {
	s, err := f.promQuery(query)
	if err != nil || len(s) != 1 {
		logf("Prometheus query %s: %v %v", query, s, err)
		return -1
	}
	return s[0].value
}

// promValues returns a metric's value by instance, as text.
func (f *fleet) promValues(metric string) string {
	s, err := f.promQuery(metric)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, x := range s {
		parts = append(parts, fmt.Sprintf("%s=%v", x.labels["instance"], x.value))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// promResult returns a query's result as text: each value, with the
// labels that tell them apart.
func (f *fleet) promResult(query string) string {
	samples, err := f.promQuery(query)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, x := range samples {
		var labels []string
		for k, v := range x.labels {
			labels = append(labels, k+"="+v)
		}
		slices.Sort(labels)
		parts = append(parts, strings.TrimPrefix(fmt.Sprintf("%s %.3g", strings.Join(labels, ","), x.value), " "))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}
