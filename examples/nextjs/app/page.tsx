import { connection } from "next/server";
import TodoApp from "./todo-app";

// A server component: it reads where taskapi is, and how to get a token for it, when the page is
// requested (not when it is built), and hands both to the browser part.
export default async function Page() {
  await connection();
  return (
    <TodoApp
      apiUrl={process.env.TASKAPI_URL || "http://localhost:8080"}
      tokenMode={process.env.TASKAPI_TOKEN_MODE === "hs256" ? "hs256" : "jwks"}
    />
  );
}
