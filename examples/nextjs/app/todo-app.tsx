"use client";
// The whole UI: sign up or sign in with Better Auth, then the signed-in user's tasks, kept by lib/sync.ts
// (optimistic, offline-safe, live). Filters and sorts run in the browser over the whole list, offline too.
import { useEffect, useRef, useState, useSyncExternalStore } from "react";
import { authClient } from "@/lib/auth-client";
import { forgetToken, taskapi, type Priority, type Task, type TaskInput, type TokenMode } from "@/lib/taskapi";
import { forgetList, taskSync, type Conflict, type ShownTask, type TaskSync } from "@/lib/sync";

// Who was last signed in on this browser: while the session cannot be fetched (offline), the page opens
// with that user's list and what waits. Forgotten at sign-out.
type User = { id: string; email: string };
const userKey = "taskapi-user";
const keptUser = (): User | null => JSON.parse(localStorage.getItem(userKey) || "null");

export default function TodoApp({ apiUrl, tokenMode }: { apiUrl: string; tokenMode: TokenMode }) {
  const { data, error, isPending } = authClient.useSession();
  // A failed fetch of the session (no answer) is not a sign-out: the user last signed in stays.
  const user: User | null = data?.user ?? (error && error.status !== 401 ? keptUser() : null);
  const [sync, setSync] = useState<TaskSync | null>(null);
  const userId = user?.id;
  useEffect(() => {
    if (data) localStorage.setItem(userKey, JSON.stringify({ id: data.user.id, email: data.user.email }));
  }, [data]);
  // public/sw.js keeps the app itself, so that a reload while offline shows it. Production builds only:
  // under `next dev` a kept copy would only get in the way.
  useEffect(() => {
    if (process.env.NODE_ENV !== "production" || !("serviceWorker" in navigator)) return;
    navigator.serviceWorker.register("/sw.js").catch((e) => console.warn("service worker not registered:", e));
  }, []);
  useEffect(() => {
    if (!userId) return;
    const s = taskSync(taskapi(apiUrl, tokenMode), userId);
    setSync(s);
    const stop = s.start();
    return () => {
      stop();
      setSync(null);
    };
  }, [apiUrl, tokenMode, userId]);

  if (isPending) return <main className="page"><p className="muted">Loading…</p></main>;
  if (!user) return <SignIn />;
  return (
    <main className="page">
      <header className="top">
        <h1>Tasks</h1>
        {sync && <SyncStatus sync={sync} />}
        <span className="who">
          <span>Signed in as <strong>{user.email}</strong></span>
          <button
            className="link"
            onClick={() => {
              forgetToken();
              localStorage.removeItem(userKey);
              authClient.signOut().finally(() => forgetList(user.id));
            }}
          >
            Sign out
          </button>
        </span>
      </header>
      {sync ? <Tasks sync={sync} /> : <p className="muted">Loading tasks…</p>}
    </main>
  );
}

function SignIn() {
  const [mode, setMode] = useState<"sign-in" | "sign-up">("sign-in");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(e: React.FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const email = String(f.get("email")), password = String(f.get("password"));
    setBusy(true);
    const { error } =
      mode === "sign-up"
        ? await authClient.signUp.email({ name: String(f.get("name")), email, password })
        : await authClient.signIn.email({ email, password });
    setBusy(false);
    setError(error ? error.message || error.statusText : "");
  }

  return (
    <main className="page narrow">
      <div className="card">
        <h1>{mode === "sign-up" ? "Create an account" : "Sign in"}</h1>
        <form className="stack" onSubmit={submit}>
          {mode === "sign-up" && (
            <label>Name<input name="name" autoComplete="name" required /></label>
          )}
          <label>Email<input name="email" type="email" autoComplete="email" required /></label>
          <label>
            Password
            <input name="password" type="password" placeholder="8 characters or more" required minLength={8}
              autoComplete={mode === "sign-up" ? "new-password" : "current-password"} />
          </label>
          <button className="primary" type="submit" disabled={busy}>{mode === "sign-up" ? "Sign up" : "Sign in"}</button>
        </form>
        {error && <p className="error" role="alert">{error}</p>}
        <button className="link" onClick={() => setMode(mode === "sign-up" ? "sign-in" : "sign-up")}>
          {mode === "sign-up" ? "I have an account" : "Create an account"}
        </button>
      </div>
    </main>
  );
}

const useSnapshot = (sync: TaskSync) => useSyncExternalStore(sync.subscribe, sync.snapshot, sync.snapshot);
const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? "" : "s"}`;

// "Offline, 2 changes waiting", "Saving 1 change…", "All changes saved": read out by screen readers too.
function SyncStatus({ sync }: { sync: TaskSync }) {
  const s = useSnapshot(sync);
  const text = !s.online
    ? `Offline, ${plural(s.waiting, "change")} waiting`
    : s.conflicts.length
      ? `${plural(s.conflicts.length, "conflict")} to settle`
      : s.waiting
      ? `Saving ${plural(s.waiting, "change")}…`
      : s.saved
        ? "All changes saved"
        : "";
  return (
    <span role="status" aria-label="Sync status" className={`sync ${!s.online || s.conflicts.length ? "attention" : ""}`}>
      {text}
    </span>
  );
}

const sorts: Record<string, (a: Task, b: Task) => number> = {
  "Newest first": (a, b) => b.created_at.localeCompare(a.created_at) || a.id.localeCompare(b.id),
  "Due date": (a, b) => (a.due_date ?? "9").localeCompare(b.due_date ?? "9") || sorts["Newest first"](a, b),
  "Priority": (a, b) => rank[b.priority] - rank[a.priority] || sorts["Newest first"](a, b),
  "Title": (a, b) => a.title.localeCompare(b.title) || a.id.localeCompare(b.id),
};
const rank: Record<Priority, number> = { low: 0, medium: 1, high: 2 };

// The day a due date names (taskapi keeps it as midnight UTC) against today where the user is:
// "Due today", "Due tomorrow", "Due Fri", "Due Dec 12"; past and not done: "Overdue · Dec 1".
function due(task: Task, now = new Date()): { text: string; overdue: boolean } | null {
  if (!task.due_date) return null;
  const [y, m, d] = task.due_date.slice(0, 10).split("-").map(Number);
  const day = Date.UTC(y, m - 1, d);
  const days = Math.round((day - Date.UTC(now.getFullYear(), now.getMonth(), now.getDate())) / 86_400_000);
  const fmt = (o: Intl.DateTimeFormatOptions) => new Date(day).toLocaleDateString(undefined, { timeZone: "UTC", ...o });
  const date = fmt({ month: "short", day: "numeric", ...(y !== now.getFullYear() ? { year: "numeric" } : {}) });
  const overdue = days < 0 && !task.completed;
  if (overdue) return { text: days === -1 ? "Overdue · yesterday" : `Overdue · ${date}`, overdue };
  const when = days === 0 ? "today" : days === 1 ? "tomorrow" : days === -1 ? "yesterday" : days > 1 && days < 7 ? fmt({ weekday: "short" }) : date;
  return { text: `Due ${when}`, overdue };
}

function Tasks({ sync }: { sync: TaskSync }) {
  const snap = useSnapshot(sync);
  const [q, setQ] = useState("");
  const [status, setStatus] = useState<"all" | "pending" | "completed">("all");
  const [priority, setPriority] = useState<"all" | Priority>("all");
  const [tag, setTag] = useState("");
  const [sort, setSort] = useState("Newest first");
  const [editing, setEditing] = useState<string | null>(null);
  const [undo, setUndo] = useState<{ n: string; title: string } | null>(null);
  useEffect(() => {
    if (!undo) return;
    const t = setTimeout(() => setUndo(null), 5000);
    return () => clearTimeout(t);
  }, [undo]);

  const tasks = snap.tasks ?? [];
  const needle = q.trim().toLowerCase();
  const shown = tasks
    .filter((t) => status === "all" || (status === "completed") === t.completed)
    .filter((t) => priority === "all" || t.priority === priority)
    .filter((t) => !tag || t.tags.includes(tag))
    .filter((t) => !needle || `${t.title}\n${t.description ?? ""}`.toLowerCase().includes(needle))
    .sort(sorts[sort]);
  const left = tasks.filter((t) => !t.completed).length;
  const overdue = tasks.filter((t) => due(t)?.overdue).length;
  const allTags = [...new Set(tasks.flatMap((t) => t.tags))].sort();
  const filtered = needle || status !== "all" || priority !== "all" || tag;

  return (
    <>
      <NewTask sync={sync} />
      {snap.conflicts.map((c) => <ConflictPanel key={c.n} conflict={c} sync={sync} />)}
      {snap.notices.map((n) => (
        <p key={n.n} className="notice" role="alert">
          {n.text} <button className="link" onClick={() => sync.dismiss(n.n)}>Dismiss</button>
        </p>
      ))}
      <div className="toolbar">
        <input type="search" aria-label="Search" placeholder="Search" value={q} onChange={(e) => setQ(e.target.value)}
          onKeyDown={(e) => e.key === "Escape" && setQ("")} />
        <label>Show
          <select aria-label="Show" value={status} onChange={(e) => setStatus(e.target.value as typeof status)}>
            <option value="all">All</option>
            <option value="pending">Pending</option>
            <option value="completed">Completed</option>
          </select>
        </label>
        <label>Priority
          <select aria-label="Priority" value={priority} onChange={(e) => setPriority(e.target.value as typeof priority)}>
            <option value="all">Any</option>
            <option value="high">High</option>
            <option value="medium">Medium</option>
            <option value="low">Low</option>
          </select>
        </label>
        <label>Tag
          <select aria-label="Tag" value={tag} onChange={(e) => setTag(e.target.value)}>
            <option value="">Any</option>
            {[...new Set([...allTags, ...(tag ? [tag] : [])])].map((t) => <option key={t} value={t}>#{t}</option>)}
          </select>
        </label>
        <label>Sort by
          <select aria-label="Sort by" value={sort} onChange={(e) => setSort(e.target.value)}>
            {Object.keys(sorts).map((s) => <option key={s}>{s}</option>)}
          </select>
        </label>
      </div>
      <div className="counts">
        <span aria-label="Counts">
          {plural(left, "task")} left · {tasks.length - left} completed{overdue ? ` · ${overdue} overdue` : ""}
        </span>
        {tasks.length > left && <button className="link" onClick={() => sync.clearCompleted()}>Clear completed</button>}
      </div>
      {snap.error && (
        <p className="error" role="alert">
          {snap.error}. Is taskapi running, with this page&apos;s origin in its CORS_ORIGINS?
        </p>
      )}
      {snap.tasks === null ? (
        !snap.error && <p className="muted">Loading tasks…</p>
      ) : shown.length === 0 ? (
        <p className="empty">{filtered ? "No tasks match." : "No tasks here."}</p>
      ) : (
        <ul aria-label="Tasks" className="tasks">
          {shown.map((t) =>
            editing === t.id ? (
              <EditTask key={t.id} task={t} sync={sync} onDone={() => setEditing(null)} />
            ) : (
              <TaskItem key={t.id} task={t} online={snap.online} onTag={setTag}
                onToggle={() => sync.setCompleted(t, !t.completed)}
                onEdit={() => setEditing(t.id)}
                onDelete={() => setUndo({ n: sync.remove(t), title: t.title })} />
            ),
          )}
        </ul>
      )}
      {undo && (
        <div className="toast" role="status">
          Deleted “{undo.title}”.{" "}
          <button className="link" onClick={() => (sync.undo(undo.n), setUndo(null))}>Undo</button>
        </div>
      )}
    </>
  );
}

type Fields = Required<Pick<TaskInput, "title" | "description" | "priority" | "due_date" | "tags">>;

// The fields of the new-task and edit forms as taskapi wants them: a date input's "2026-12-01" becomes
// midnight UTC that day, and "home, urgent" the tags ["home", "urgent"].
function readFields(form: HTMLFormElement): Fields {
  const f = new FormData(form);
  const due = String(f.get("due") || "");
  return {
    title: String(f.get("title")).trim(),
    description: String(f.get("description") || "").trim() || null,
    priority: String(f.get("priority")) as Priority,
    due_date: due ? `${due}T00:00:00Z` : null,
    tags: String(f.get("tags") || "").split(",").map((s) => s.trim()).filter(Boolean),
  };
}

function FieldInputs({ task }: { task?: Task }) {
  return (
    <div className="fields">
      <input name="description" aria-label="Description" placeholder="Description (optional)" defaultValue={task?.description ?? ""} maxLength={1000} />
      <select name="priority" aria-label="Priority" defaultValue={task?.priority ?? "medium"}>
        <option value="low">Low priority</option>
        <option value="medium">Medium priority</option>
        <option value="high">High priority</option>
      </select>
      <input name="due" type="date" aria-label="Due date" defaultValue={task?.due_date?.slice(0, 10)} />
      <input name="tags" aria-label="Tags" placeholder="Tags, comma-separated" defaultValue={task?.tags.join(", ")} />
    </div>
  );
}

// Add: the Idempotency-Key is made when the user presses Add and kept until taskapi has the task, so a
// double click or a retry makes one task; the form is emptied only once the task is saved or queued.
function NewTask({ sync }: { sync: TaskSync }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const key = useRef<string | null>(null);
  return (
    <form
      aria-label="New task"
      className="new-task"
      onSubmit={async (e) => {
        e.preventDefault();
        if (key.current) return; // this task is on its way
        const form = e.currentTarget;
        key.current = crypto.randomUUID();
        setBusy(true);
        try {
          await sync.create(readFields(form), key.current);
          form.reset();
          setError("");
        } catch (err) {
          setError((err as Error).message);
        } finally {
          key.current = null;
          setBusy(false);
        }
      }}
      onKeyDown={(e) => e.key === "Escape" && (e.currentTarget.reset(), setError(""))}
    >
      <div className="new-main">
        <input name="title" aria-label="Title" placeholder="What needs doing?" required maxLength={200} autoComplete="off" />
        <button className="primary" type="submit" disabled={busy}>Add</button>
      </div>
      <FieldInputs />
      {error && <p className="error" role="alert">Not added: {error}</p>}
    </form>
  );
}

function TaskItem(props: {
  task: ShownTask; online: boolean; onToggle: () => void; onEdit: () => void; onDelete: () => void; onTag: (t: string) => void;
}) {
  const { task } = props;
  const d = due(task);
  return (
    <li className={`task${task.completed ? " done" : ""}${d?.overdue ? " overdue" : ""}`}>
      <input type="checkbox" aria-label={`Completed: ${task.title}`} checked={task.completed} onChange={props.onToggle} />
      <div className="body">
        <span className="title">{task.title}</span>
        {task.description && <span className="desc">{task.description}</span>}
        <span className="meta">
          <span className={`badge p-${task.priority}`}>{task.priority}</span>
          {d && <span className={d.overdue ? "due late" : "due"}>{d.text}</span>}
          {task.tags.map((tag) => (
            <button key={tag} className="tag" onClick={() => props.onTag(tag)} aria-label={`Filter by tag ${tag}`}>#{tag}</button>
          ))}
          {task.pending && <span className="pending">{props.online ? "saving…" : "waiting"}</span>}
        </span>
      </div>
      <span className="actions">
        <button onClick={props.onEdit} aria-label={`Edit ${task.title}`}>Edit</button>
        <button onClick={props.onDelete} aria-label={`Delete ${task.title}`} className="danger">Delete</button>
      </span>
    </li>
  );
}

// An edit keeps the version it started from: a change made meanwhile elsewhere (a live update) does not
// move it, so saving over it is refused (412) and shown as a conflict. Only the fields changed are sent.
function EditTask({ task, sync, onDone }: { task: Task; sync: TaskSync; onDone: () => void }) {
  const [start] = useState(task);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const first = useRef<HTMLInputElement>(null);
  useEffect(() => first.current?.focus(), []);
  return (
    <li className="task editing">
      <form
        aria-label={`Edit ${start.title}`}
        className="edit"
        onKeyDown={(e) => e.key === "Escape" && onDone()}
        onSubmit={async (e) => {
          e.preventDefault();
          const fields = readFields(e.currentTarget);
          const changes = Object.fromEntries(
            Object.entries(fields).filter(([k, v]) => JSON.stringify(v) !== JSON.stringify(start[k as keyof Task])),
          ) as Partial<TaskInput>;
          if (Object.keys(changes).length === 0) return onDone();
          setBusy(true);
          try {
            await sync.edit(start, start.version, changes);
            onDone();
          } catch (err) {
            setError((err as Error).message);
            setBusy(false);
          }
        }}
      >
        <input ref={first} name="title" aria-label="Title" defaultValue={start.title} required maxLength={200} />
        <FieldInputs task={start} />
        <span className="buttons">
          <button className="primary" type="submit" disabled={busy}>Save</button>
          <button type="button" onClick={onDone}>Cancel</button>
        </span>
        {error && <p className="error" role="alert">Not saved: {error}</p>}
      </form>
    </li>
  );
}

// Both versions side by side; the user keeps theirs (sent again over the other version) or takes the other.
function ConflictPanel({ conflict, sync }: { conflict: Conflict; sync: TaskSync }) {
  const { mine, theirs } = conflict;
  const show = (t: Task | null) =>
    t ? (
      <dl>
        <dt>Title</dt><dd>{t.title}</dd>
        <dt>Description</dt><dd>{t.description || "—"}</dd>
        <dt>Priority</dt><dd>{t.priority}</dd>
        <dt>Due</dt><dd>{t.due_date ? t.due_date.slice(0, 10) : "—"}</dd>
        <dt>Tags</dt><dd>{t.tags.map((x) => `#${x}`).join(" ") || "—"}</dd>
        <dt>Done</dt><dd>{t.completed ? "yes" : "no"}</dd>
      </dl>
    ) : (
      <p>Deleted</p>
    );
  return (
    <section className="conflict" role="alert" aria-label={`Conflict: ${theirs.title}`}>
      <h2>“{theirs.title}” was changed elsewhere while you {mine ? "edited" : "deleted"} it</h2>
      <div className="versions">
        <div aria-label="Yours"><h3>Yours (not saved)</h3>{show(mine)}</div>
        <div aria-label="Theirs"><h3>Theirs (saved)</h3>{show(theirs)}</div>
      </div>
      <span className="buttons">
        <button className="primary" onClick={() => sync.resolve(conflict, "mine")}>{mine ? "Keep mine" : "Delete anyway"}</button>
        <button onClick={() => sync.resolve(conflict, "theirs")}>Take theirs</button>
      </span>
    </section>
  );
}
