// Better Auth in the browser. jwtClient adds authClient.token(): GET /api/auth/token, a fresh JWT for the session.
import { createAuthClient } from "better-auth/react";
import { jwtClient } from "better-auth/client/plugins";

export const authClient = createAuthClient({ plugins: [jwtClient()] });
