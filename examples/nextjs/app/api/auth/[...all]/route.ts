// Better Auth's endpoints: sign-up, sign-in, session, /api/auth/token, /api/auth/jwks, ...
import { toNextJsHandler } from "better-auth/next-js";
import { auth } from "@/lib/auth";

export const { GET, POST } = toNextJsHandler(auth);
