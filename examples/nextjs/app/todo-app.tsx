"use client";
// The whole UI: sign up or sign in with Better Auth, then the signed-in user's tasks from taskapi.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { authClient } from "@/lib/auth-client";
import { taskapi, type ListQuery, type Priority, type Task, type TaskApi, type TokenMode } from "@/lib/taskapi";

export default function TodoApp({ apiUrl, tokenMode }: { apiUrl: string; tokenMode: TokenMode }) {
  const { data: session, isPending } = authClient.useSession();
  const api = useMemo(() => taskapi(apiUrl, tokenMode), [apiUrl, tokenMode]);
  if (isPending) return <p>Loading…</p>;
  if (!session) return <SignIn />;
  return (
    <main>
      <header>
        <h1>Tasks</h1>
        <span>
          Signed in as <strong>{session.user.email}</strong>{" "}
          <button onClick={() => authClient.signOut()}>Sign out</button>
        </span>
      </header>
      <Tasks api={api} />
    </main>
  );
}

function SignIn() {
  const [mode, setMode] = useState<"sign-in" | "sign-up">("sign-in");
  const [error, setError] = useState("");

  async function submit(e: React.FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const email = String(f.get("email")), password = String(f.get("password"));
    const { error } =
      mode === "sign-up"
        ? await authClient.signUp.email({ name: String(f.get("name")), email, password })
        : await authClient.signIn.email({ email, password });
    setError(error ? error.message || error.statusText : "");
  }

  return (
    <main>
      <h1>{mode === "sign-up" ? "Create an account" : "Sign in"}</h1>
      <form onSubmit={submit}>
        {mode === "sign-up" && <input name="name" placeholder="Name" aria-label="Name" required />}
        <input name="email" type="email" placeholder="Email" aria-label="Email" required />
        <input name="password" type="password" placeholder="Password (8+ characters)" aria-label="Password" required minLength={8} />
        <button type="submit">{mode === "sign-up" ? "Sign up" : "Sign in"}</button>
      </form>
      {error && <p className="error" role="alert">{error}</p>}
      <button onClick={() => setMode(mode === "sign-up" ? "sign-in" : "sign-up")}>
        {mode === "sign-up" ? "I have an account" : "Create an account"}
      </button>
    </main>
  );
}

const sorts: Record<string, Pick<ListQuery, "sort" | "order">> = {
  "Newest first": { sort: "created" },
  "Due date": { sort: "due_date" },
  "Priority": { sort: "priority", order: "desc" },
  "Title": { sort: "title" },
};

function Tasks({ api }: { api: TaskApi }) {
  const [tasks, setTasks] = useState<Task[] | null>(null);
  const [status, setStatus] = useState<NonNullable<ListQuery["status"]>>("all");
  const [sort, setSort] = useState("Newest first");
  const [error, setError] = useState("");

  // The list as taskapi has it, for the filter and sort on screen. Only the newest fetch is shown: an older
  // answer that comes late (a filter changed, an event came) is dropped.
  const latest = useRef(0);
  const load = useCallback(async () => {
    const n = ++latest.current;
    const list = await api.list({ status, ...sorts[sort] });
    if (n === latest.current) setTasks(list);
  }, [api, status, sort]);
  // Runs an action against taskapi, then shows the list as taskapi now has it; errors go on screen.
  const run = useCallback(
    (action: () => Promise<unknown>) =>
      action().then(load).then(() => setError(""), (e: Error) => setError(e.message)),
    [load],
  );
  useEffect(() => {
    load().catch((e: Error) => setError(e.message));
  }, [load]);

  // Live updates, from this tab, other tabs and other devices: an event is applied at once where it can be
  // (a task replaced or removed), then the list is fetched again for the filter and the sort (a new task,
  // a reload). One fetch at a time, and one more after it if events came meanwhile: a stream that resumes
  // may replay many. A fetch that fails is tried again 5 seconds later: the event will not come again.
  const loadNow = useRef(load);
  useEffect(() => {
    loadNow.current = load;
  }, [load]);
  useEffect(() => {
    let busy = false, again = false, failed = false, retry: ReturnType<typeof setTimeout> | undefined;
    const refetch = () => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      loadNow.current()
        .then(
          () => {
            if (failed) setError("");
            failed = false;
          },
          (e: Error) => {
            failed = true;
            setError(e.message);
            clearTimeout(retry);
            retry = setTimeout(refetch, 5000);
          },
        )
        .finally(() => {
          busy = false;
          if (again) {
            again = false;
            refetch();
          }
        });
    };
    const stop = api.events((e) => {
      if (e.type === "task.updated")
        setTasks((ts) => ts && ts.map((t) => (t.id === e.task.id && t.version < e.task.version ? e.task : t)));
      if (e.type === "task.deleted") setTasks((ts) => ts && ts.filter((t) => t.id !== e.id));
      if (e.type === "tasks.deleted") setTasks((ts) => ts && ts.filter((t) => !e.ids.includes(t.id)));
      refetch();
    });
    return () => {
      stop();
      clearTimeout(retry);
    };
  }, [api]);

  return (
    <>
      <NewTask onCreate={(task) => run(() => api.create(task))} />
      <div className="row">
        <label>
          Show{" "}
          <select value={status} onChange={(e) => setStatus(e.target.value as typeof status)}>
            <option value="all">All</option>
            <option value="pending">Pending</option>
            <option value="completed">Completed</option>
          </select>
        </label>
        <label>
          Sort by{" "}
          <select value={sort} onChange={(e) => setSort(e.target.value)}>
            {Object.keys(sorts).map((s) => <option key={s}>{s}</option>)}
          </select>
        </label>
        <button onClick={() => run(() => api.clearCompleted())}>Clear completed</button>
      </div>
      {error && <p className="error" role="alert">{error}</p>}
      {tasks === null ? (
        <p>Loading tasks…</p>
      ) : tasks.length === 0 ? (
        <p>No tasks here.</p>
      ) : (
        <ul aria-label="Tasks">
          {tasks.map((t) => (
            <TaskItem
              key={t.id}
              task={t}
              onToggle={() => run(() => api.toggle(t.id))}
              onSave={(changes) => run(() => api.update(t, changes))}
              onDelete={() => run(() => api.remove(t.id))}
            />
          ))}
        </ul>
      )}
    </>
  );
}

type Fields = { title: string; priority: Priority; due_date: string | null; tags: string[] };

// The fields of the new-task and edit forms as taskapi wants them: a date input's "2026-12-01" becomes
// midnight UTC that day, and "home, urgent" the tags ["home", "urgent"].
function readFields(form: HTMLFormElement): Fields {
  const f = new FormData(form);
  const due = String(f.get("due") || "");
  return {
    title: String(f.get("title")),
    priority: String(f.get("priority")) as Priority,
    due_date: due ? `${due}T00:00:00Z` : null,
    tags: String(f.get("tags") || "").split(",").map((s) => s.trim()).filter(Boolean),
  };
}

function FieldInputs({ task }: { task?: Task }) {
  return (
    <>
      <input name="title" aria-label="Title" placeholder="What needs doing?" defaultValue={task?.title} required maxLength={200} />
      <select name="priority" aria-label="Priority" defaultValue={task?.priority ?? "medium"}>
        <option value="low">low</option>
        <option value="medium">medium</option>
        <option value="high">high</option>
      </select>
      <input name="due" type="date" aria-label="Due date" defaultValue={task?.due_date?.slice(0, 10)} />
      <input name="tags" aria-label="Tags" placeholder="tags, comma-separated" defaultValue={task?.tags.join(", ")} />
    </>
  );
}

function NewTask({ onCreate }: { onCreate: (task: Fields) => Promise<void> }) {
  return (
    <form
      aria-label="New task"
      onSubmit={async (e) => {
        e.preventDefault();
        const form = e.currentTarget;
        await onCreate(readFields(form));
        form.reset();
      }}
    >
      <FieldInputs />
      <button type="submit">Add</button>
    </form>
  );
}

function TaskItem(props: { task: Task; onToggle: () => void; onSave: (c: Fields) => Promise<void>; onDelete: () => void }) {
  const { task } = props;
  const [editing, setEditing] = useState(false);
  if (editing) {
    return (
      <li>
        <form
          aria-label={`Edit ${task.title}`}
          onSubmit={async (e) => {
            e.preventDefault();
            await props.onSave(readFields(e.currentTarget));
            setEditing(false);
          }}
        >
          <FieldInputs task={task} />
          <button type="submit">Save</button>
          <button type="button" onClick={() => setEditing(false)}>Cancel</button>
        </form>
      </li>
    );
  }
  return (
    <li className={task.completed ? "done" : ""}>
      <input type="checkbox" aria-label={`Completed: ${task.title}`} checked={task.completed} onChange={props.onToggle} />
      <span className="title">{task.title}</span>
      <span className={`meta priority-${task.priority}`}>{task.priority}</span>
      {task.due_date && <span className="meta">due {task.due_date.slice(0, 10)}</span>}
      {task.tags.map((tag) => <span key={tag} className="meta">#{tag}</span>)}
      <button onClick={() => setEditing(true)}>Edit</button>
      <button onClick={props.onDelete}>Delete</button>
    </li>
  );
}
