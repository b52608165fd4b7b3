// A Better Auth server with the JWT plugin, as a Next.js app would run it,
// for .ci/better-auth. It signs up one user, fetches a JWT for them the way
// the browser client does (GET /api/auth/token with the session cookie),
// prints {"userId", "token"} on one line, and keeps serving the JWKS.
import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { jwt } from "better-auth/plugins";
import { toNodeHandler } from "better-auth/node";

const port = Number(process.env.PORT || 3917);
const baseURL = `http://127.0.0.1:${port}`;
const db = { user: [], session: [], account: [], verification: [], jwks: [] };
const auth = betterAuth({
  baseURL,
  secret: "interop-secret-0123456789-0123456789-abcdef",
  database: memoryAdapter(db),
  emailAndPassword: { enabled: true },
  plugins: [jwt()],
});
const server = http.createServer(toNodeHandler(auth));
server.listen(port, "127.0.0.1", async () => {
  const signUp = await fetch(`${baseURL}/api/auth/sign-up/email`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Origin: baseURL },
    body: JSON.stringify({ email: "ada@example.com", password: "correct horse battery", name: "Ada" }),
  });
  const cookie = signUp.headers.getSetCookie().map((c) => c.split(";")[0]).join("; ");
  const user = (await signUp.json()).user;
  const tokenRes = await fetch(`${baseURL}/api/auth/token`, { headers: { Cookie: cookie } });
  const { token } = await tokenRes.json();
  console.log(JSON.stringify({ userId: user.id, token }));
});
