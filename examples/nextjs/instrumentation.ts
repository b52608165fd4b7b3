// Runs once when the server starts: creates or updates Better Auth's tables (user, session, account,
// verification, jwks) in DATABASE_URL, as `npx @better-auth/cli migrate` would.
export async function register() {
  if (process.env.NEXT_RUNTIME !== "nodejs") return;
  const { getMigrations } = await import("better-auth/db/migration");
  const { auth } = await import("./lib/auth");
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();
}
