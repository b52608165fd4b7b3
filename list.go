// This file is the store's side of lists: the filters and orders a list can
// have, the one SQL statement each combination becomes, and keyset paging,
// where a page ends at a position that the next page starts after.

package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sort is an order a list can be sorted in, named as the API names it.
type Sort string

// The orders of a list.
const (
	SortCreated  Sort = "created"
	SortUpdated  Sort = "updated"
	SortTitle    Sort = "title"
	SortDueDate  Sort = "due_date"
	SortPriority Sort = "priority"
)

// ParseSort returns the Sort called name, and whether there is one.
func ParseSort(name string) (Sort, bool) {
	_, ok := sortKeys[Sort(name)]
	return Sort(name), ok
}

// sortKey is the key of one sort direction: its SQL expression, which an
// index of schema.sql matches exactly, and the key's type in a position.
type sortKey struct {
	expr, typ string
}

// sortKeys maps each Sort to its ascending and descending keys. Tasks
// without a due date sort last either way: their key is infinity ascending
// and -infinity descending. It is a table, never changed.
var sortKeys = map[Sort][2]sortKey{
	SortCreated:  {{"created_at", "timestamptz"}, {"created_at", "timestamptz"}},
	SortUpdated:  {{"updated_at", "timestamptz"}, {"updated_at", "timestamptz"}},
	SortTitle:    {{"title", "text"}, {"title", "text"}},
	SortDueDate:  {{"coalesce(due_date, 'infinity'::timestamptz)", "timestamptz"}, {"coalesce(due_date, '-infinity'::timestamptz)", "timestamptz"}},
	SortPriority: {{priorityRank, "integer"}, {priorityRank, "integer"}},
}

// priorityRank orders priorities low < medium < high, not alphabetically.
const priorityRank = `(CASE priority WHEN 'low' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END)`

// ListOptions selects and orders the tasks of a list, and says which page.
// Nil and empty fields do not filter. Everything but Limit and After is the
// list's scope: a position is only meaningful within the scope it came from.
type ListOptions struct {
	Completed *bool // true: completed tasks only; false: pending only
	Sort      Sort  // one of the Sort constants, or from ParseSort
	Desc      bool

	Query     string     // in title or description, case-insensitive, literally
	Priority  string     // one of priorities
	Tags      []string   // every one must be present
	DueBefore *time.Time // due_date < DueBefore
	DueAfter  *time.Time // due_date >= DueAfter
	Overdue   *bool      // due in the past and not completed (or the opposite)

	Limit int    `json:"-"` // the page size, at least 1
	After string `json:"-"` // Page.Next of the previous page; "" for the first page
}

// Page is one page of a list.
type Page struct {
	Tasks []Task // never nil
	// Next is the position the next page starts after, or "" when this is
	// the last page. It is opaque to callers, who hand it back as
	// ListOptions.After; it holds the last task's sort key and id.
	Next string
}

// ListTasks returns a page of up to opts.Limit of the user's tasks that match
// opts, in its order, after opts.After. A position that cannot be one of this
// list's is ErrBadPosition. A Limit below 1, like a Sort that is not one of
// the constants, is a bug in the caller and an error: a page of no tasks
// could never say where the next one starts.
func (s *Store) ListTasks(ctx context.Context, userID string, opts ListOptions) (Page, error) {
	query, args, err := listQuery(userID, opts)
	if err != nil {
		return Page{}, fmt.Errorf("list tasks: %w", err)
	}
	var tasks []Task
	err = s.db.withConn(ctx, func(c stmtConn) error {
		rows, err := c.Query(query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		tasks = []Task{}
		scanner := newTaskScanner(userID)
		for rows.Next() {
			t, err := scanner.scan(rows)
			if err != nil {
				return err
			}
			tasks = append(tasks, t)
		}
		return rows.Err()
	})
	if err != nil {
		return Page{}, dbError("list tasks", err)
	}
	// listQuery asks for one task more than the page holds: if it came, there
	// is a next page, which starts after the page's last task.
	if len(tasks) <= opts.Limit {
		return Page{Tasks: tasks}, nil
	}
	tasks = tasks[:opts.Limit]
	return Page{Tasks: tasks, Next: positionOf(opts.Sort, opts.Desc, tasks[len(tasks)-1])}, nil
}

// listQuery returns the statement and arguments of a list page, with one row
// more than the page. It is put together from fixed pieces only (user input
// goes in the arguments), with a condition for each filter in use and none
// for the rest, so that every statement has a plain plan that PostgreSQL can
// cache: an index range scan in the order asked for, stopped by the LIMIT. A
// later page starts after a position with a row comparison, which the same
// index serves as a range, so each page costs the same however deep it is.
func listQuery(userID string, opts ListOptions) (string, []any, error) {
	keys, ok := sortKeys[opts.Sort]
	if !ok { // a bug in the caller: user input goes through ParseSort
		return "", nil, fmt.Errorf("sort %q is not one of the Sort constants", opts.Sort)
	}
	if opts.Limit < 1 { // a bug in the caller: parseListOptions gives 1 to maxLimit
		return "", nil, fmt.Errorf("limit %d is below 1", opts.Limit)
	}
	key, dir, cmp := keys[0], "ASC", ">"
	if opts.Desc {
		key, dir, cmp = keys[1], "DESC", "<"
	}
	var q strings.Builder
	args := []any{userID}
	q.WriteString("SELECT " + taskColumns + " FROM tasks WHERE user_id = $1")
	// where adds a condition; each ? in it stands for the next argument.
	where := func(cond string, values ...any) {
		q.WriteString("\n  AND ")
		for _, part := range strings.SplitAfter(cond, "?") {
			if strings.HasSuffix(part, "?") {
				args = append(args, values[0])
				values = values[1:]
				part = strings.TrimSuffix(part, "?") + "$" + strconv.Itoa(len(args))
			}
			q.WriteString(part)
		}
	}
	if opts.Completed != nil {
		where("completed = ?", *opts.Completed)
	}
	if opts.Query != "" {
		pattern := "%" + likeEscaper.Replace(opts.Query) + "%"
		where("(title ILIKE ? OR description ILIKE ?)", pattern, pattern)
	}
	if opts.Priority != "" {
		where("priority = ?", opts.Priority)
	}
	if len(opts.Tags) > 0 {
		where("tags @> ?", opts.Tags)
	}
	if opts.DueBefore != nil {
		where("due_date < ?", *opts.DueBefore)
	}
	if opts.DueAfter != nil {
		where("due_date >= ?", *opts.DueAfter)
	}
	if opts.Overdue != nil {
		if *opts.Overdue {
			where("NOT completed AND due_date < now()")
		} else {
			where("(completed OR due_date IS NULL OR due_date >= now())")
		}
	}
	if opts.After != "" {
		sortValue, id, err := parsePosition(opts.Sort, opts.After)
		if err != nil {
			return "", nil, err
		}
		where("("+key.expr+", id) "+cmp+" (?::text::"+key.typ+", ?::uuid)", sortValue, id)
	}
	args = append(args, opts.Limit+1)
	q.WriteString("\nORDER BY " + key.expr + " " + dir + ", id " + dir + "\nLIMIT $" + strconv.Itoa(len(args)))
	return q.String(), args, nil
}

// likeEscaper makes % and _ (and the escape character itself) match
// literally in an ILIKE pattern.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// positionOf returns the position of t in a list sorted by sort: its sort
// key as text, a NUL, and its id.
func positionOf(sort Sort, desc bool, t Task) string {
	var key string
	switch sort {
	case SortCreated:
		key = t.CreatedAt.Format(time.RFC3339Nano)
	case SortUpdated:
		key = t.UpdatedAt.Format(time.RFC3339Nano)
	case SortTitle:
		key = t.Title
	case SortDueDate:
		switch {
		case t.DueDate != nil:
			key = t.DueDate.Format(time.RFC3339Nano)
		case desc:
			key = "-infinity"
		default:
			key = "infinity"
		}
	case SortPriority:
		key = strconv.Itoa(slices.Index(priorities, t.Priority) + 1)
	}
	return key + "\x00" + t.ID
}

// parsePosition splits a position made by positionOf into its sort key and
// id, and checks that the key can be one of the sort's, so that a position
// can never make PostgreSQL fail a cast.
func parsePosition(sort Sort, pos string) (key, id string, err error) {
	key, id, ok := strings.Cut(pos, "\x00")
	if !ok || !isUUID(id) {
		return "", "", ErrBadPosition
	}
	switch sort {
	case SortCreated, SortUpdated:
		_, err = time.Parse(time.RFC3339Nano, key)
	case SortDueDate:
		if key != "infinity" && key != "-infinity" {
			_, err = time.Parse(time.RFC3339Nano, key)
		}
	case SortPriority:
		if key != "1" && key != "2" && key != "3" {
			err = ErrBadPosition
		}
	case SortTitle:
		if !validText(key, maxTitle) {
			err = ErrBadPosition
		}
	}
	if err != nil {
		return "", "", ErrBadPosition
	}
	return key, id, nil
}
