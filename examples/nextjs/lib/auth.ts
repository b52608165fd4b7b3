// Better Auth on the server: email and password, the JWT plugin, and a PostgreSQL database of its own.
import { betterAuth } from "better-auth";
import { jwt } from "better-auth/plugins";
import { Pool } from "pg";
import { databaseURL } from "./database-url";

export const auth = betterAuth({
  baseURL: process.env.BETTER_AUTH_URL, // e.g. http://localhost:3000; taskapi gets the same BETTER_AUTH_URL
  secret: process.env.BETTER_AUTH_SECRET,
  database: new Pool({ connectionString: databaseURL() || undefined }),
  emailAndPassword: { enabled: true },
  // EdDSA key pair by default; public keys at /api/auth/jwks; tokens: sub = user id, iss = aud = baseURL, 15 minutes.
  plugins: [jwt()],
});
