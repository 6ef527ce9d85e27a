// Starts the real kiln binary for the end-to-end tests of the streaming helpers and of
// the OpenAI SDK (KILN_BIN, default bin/kiln at the repository root), against the test
// database, and signs a new user up with an API key. Shared by every end-to-end test.
import { execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { access, constants } from "node:fs/promises";
import path from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";

import { createKilnClient, unwrap } from "../dist/index.js";

const packageDir = path.resolve(import.meta.dirname, "..");
/** The kiln binary the tests run. */
export const kilnBin = path.resolve(packageDir, process.env.KILN_BIN || "../../bin/kiln");

// The same databases as the server's own tests (internal/store/storetest).
const databaseURL = process.env.TEST_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable";
const redisURL = process.env.TEST_REDIS_URL || "redis://127.0.0.1:6379/0";

/**
 * Signs a new user up (kiln_test is shared: a new account each run) and creates an API
 * key with `scopes`; resolves to its secret.
 */
export async function newAPIKey(baseUrl, scopes = ["chat"]) {
  const client = createKilnClient({ baseUrl });
  const email = `sdk-ts-stream-${randomUUID()}@example.com`;
  const tokens = await unwrap(
    client.POST("/v1/auth/signup", { body: { email, password: "correct horse battery staple 9", name: "SDK TS stream" } }),
  );
  const key = await unwrap(
    client.POST("/v1/api-keys", {
      body: { name: `sdk-ts ${scopes.join(" ")}`, scopes },
      headers: { Authorization: `Bearer ${tokens.access_token}` },
    }),
  );
  return key.key;
}

/** This process's environment without Kiln's own settings, plus the test configuration. */
export function serverEnv() {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) => !name.startsWith("KILN_") && name !== "DATABASE_URL" && name !== "REDIS_URL",
    ),
  );
  return {
    ...env,
    KILN_ENV: "sdktest",
    KILN_HTTP_ADDR: "127.0.0.1:0",
    DATABASE_URL: databaseURL,
    REDIS_URL: redisURL,
    // Cheap password hashes, a spent refresh token refused at once, and no abuse limits:
    // their counts live in the shared Redis, and every run signs up from 127.0.0.1.
    KILN_AUTH_ARGON2_MEMORY_KIB: "8192",
    KILN_AUTH_ARGON2_TIME: "1",
    KILN_AUTH_REFRESH_REUSE_GRACE: "1ms",
    KILN_AUTH_LIMIT_ABUSE: "false",
  };
}

/**
 * Applies migrations, starts `kiln serve` on a free loopback port and resolves once it
 * logs its listening line.
 */
export async function startKiln() {
  try {
    await access(kilnBin, constants.X_OK);
  } catch {
    throw new Error(`no kiln binary at ${kilnBin}: run \`go build -o bin/kiln ./cmd/kiln\` at the repository root, or set KILN_BIN`);
  }
  const env = serverEnv();
  try {
    await promisify(execFile)(kilnBin, ["migrate", "up"], { env });
  } catch (err) {
    throw new Error(`kiln migrate up: ${err.message}\n${err.stdout}${err.stderr}`);
  }

  const child = spawn(kilnBin, ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
  const output = [];
  child.stderr.on("data", (chunk) => output.push(String(chunk)));
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const logs = () => output.join("");

  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kiln serve logged no listening line within 60s\n${logs()}`)), 60_000);
    // Read stdout to the end, so that the server never blocks on a full pipe.
    createInterface({ input: child.stdout }).on("line", (line) => {
      output.push(`${line}\n`);
      let record;
      try {
        record = JSON.parse(line);
      } catch {
        return;
      }
      if (record.msg === "listening" && record.addr) {
        clearTimeout(timer);
        resolve(record.addr);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`kiln serve exited with ${code ?? signal} before listening\n${logs()}`));
    });
  }).catch((err) => {
    child.kill("SIGKILL");
    throw err;
  });

  return {
    baseUrl: `http://${addr}`,
    logs,
    /** Sends SIGTERM and resolves with how the process exited (SIGKILL after 30 s). */
    async stop() {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
