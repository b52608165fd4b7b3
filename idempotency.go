// This file is idempotent creates: claiming an Idempotency-Key with the
// create, replaying a retry, and sweeping expired keys. Deleting a task
// clears what its keys hold (forgetRequestsCTE in store.go).

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"time"
)

// createTaskOnceSQL is createTaskSQL under an idempotency key ($11). It
// claims the key, with the request's hash ($13), and creates the task ($12
// is its id) in one statement, or, when the key is already claimed or the
// user is at the quota, does nothing and returns no row. Two requests racing
// with one key serialize on the key's primary key: the second waits for the
// first and then finds the key claimed. A key older than 24 hours is claimed
// afresh; SweepKeys deletes such keys for every user.
const createTaskOnceSQL = upsertUserCTE + ", " + serializeUserCTE + `, claim AS (
    INSERT INTO idempotency_keys (user_id, key, task_id, request_hash)
    SELECT $1, $11, $12, $13 FROM serialize
     WHERE ` + underQuotaSQL + `
    ON CONFLICT (user_id, key) DO UPDATE
       SET task_id = EXCLUDED.task_id, request_hash = EXCLUDED.request_hash, created_at = now()
     WHERE idempotency_keys.created_at < now() - interval '24 hours'
    RETURNING task_id
), t AS (
INSERT INTO tasks (id, user_id, title, description, completed, priority, due_date, tags)
SELECT task_id, $1, $4, $5, $6, $7, $8, $9 FROM claim
RETURNING ` + taskColumns + `
)` + recordCreatedCTE + returnTaskSQL

// idempotencyKeySQL reads a key claimed within the last 24 hours.
const idempotencyKeySQL = `SELECT task_id, request_hash, created_at FROM idempotency_keys
 WHERE user_id = $1 AND key = $2 AND created_at >= now() - interval '24 hours'`

// sweepKeysSQL deletes up to $1 keys older than 24 hours, of every user, and
// says how many.
const sweepKeysSQL = `WITH swept AS (
    DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM idempotency_keys WHERE created_at < now() - interval '24 hours' LIMIT $1))
    RETURNING 1
)
SELECT count(*) FROM swept`

// CreateTaskOnce is CreateTask under an idempotency key: the first request
// with a key creates the task; a later one with the same key and the same
// input creates nothing and returns the task as it was created, with
// replayed true; one with other input gets ErrKeyReused, and one whose task
// was deleted since gets ErrKeyTaskDeleted. Keys are per user and last 24
// hours. A key holds the task's id and a hash of the request, never its
// text: the replay is made from the retry itself, which the hash shows to be
// the same request.
func (s *Store) CreateTaskOnce(ctx context.Context, u User, key string, in NewTask) (t Task, replayed bool, err error) {
	in.Tags = nonNil(in.Tags)
	hash := requestHash(u.ID, key, in)
	var (
		inserted  bool
		taskID    string
		prior     []byte
		createdAt time.Time
	)
	err = s.db.withConn(ctx, func(c stmtConn) (err error) {
		t, err = newTaskScanner(u.ID).scan(c.QueryRow(createTaskOnceSQL,
			u.ID, u.Email, u.Name,
			in.Title, in.Description, in.Completed, in.Priority, in.DueDate, in.Tags, s.taskQuota,
			key, newUUID(), hash))
		if inserted = err == nil; inserted || !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// Nothing was created: the key was claimed before, or the user is
		// at the quota.
		return c.QueryRow(idempotencyKeySQL, u.ID, key).Scan(&taskID, &prior, &createdAt)
	})
	switch {
	case inserted:
		s.recorded(u.ID)
		return t, false, nil
	case errors.Is(err, sql.ErrNoRows):
		return Task{}, false, ErrQuota
	case err != nil:
		return Task{}, false, dbError("create task", err)
	case prior == nil:
		return Task{}, false, ErrKeyTaskDeleted
	case !bytes.Equal(prior, hash):
		return Task{}, false, ErrKeyReused
	}
	created := createdAt.UTC()
	return Task{
		ID: taskID, UserID: u.ID, Title: in.Title, Description: in.Description, Completed: in.Completed,
		Priority: in.Priority, DueDate: in.DueDate, Tags: in.Tags, CreatedAt: created, UpdatedAt: created, Version: 1,
	}, true, nil
}

// requestHash is what an idempotency key remembers of its request: a
// SHA-256 of the user, the key and the validated task, so that equal
// requests, however formatted, hash the same.
func requestHash(userID, key string, in NewTask) []byte {
	h := sha256.New()
	h.Write([]byte(userID + "\x00" + key + "\x00"))
	json.NewEncoder(h).Encode(in) // plain data: cannot fail
	return h.Sum(nil)
}

// SweepKeys deletes the idempotency keys older than 24 hours, of every user,
// and says how many it deleted.
func (s *Store) SweepKeys(ctx context.Context) (int64, error) {
	return s.deleteInBatches(ctx, "sweep idempotency keys", sweepKeysSQL)
}
