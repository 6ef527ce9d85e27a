// End-to-end: runs the real kiln binary (KILN_BIN, default bin/kiln at the repository
// root) against the test database and talks to it through the built SDK in dist/.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { AuthSession, createKilnClient, KilnProblemError, REQUEST_ID_HEADER, unwrap } from "../dist/index.js";
import { startKiln } from "./kiln-server.mjs";

describe("kiln serve", () => {
  /** @type {Awaited<ReturnType<typeof startKiln>>} */
  let kiln;
  /** @type {import("../dist/index.js").KilnClient} */
  let client;

  before(async () => {
    kiln = await startKiln();
    client = createKilnClient({ baseUrl: kiln.baseUrl });
  });

  after(async () => {
    if (kiln) {
      const { code, signal } = await kiln.stop();
      assert.equal(code, 0, `kiln serve exited with ${code ?? signal} after SIGTERM, want 0\n${kiln.logs()}`);
    }
  });

  test("GET /health answers ok", async () => {
    const health = await unwrap(client.GET("/health"));
    assert.deepEqual(health, { status: "ok" });
  });

  test("GET /ready answers ready with every check ok", async () => {
    let ready;
    try {
      ready = await unwrap(client.GET("/ready"));
    } catch (err) {
      if (err instanceof KilnProblemError) {
        assert.fail(`${err.message}; checks: ${JSON.stringify(err.problem?.checks)}`);
      }
      throw err;
    }
    assert.equal(ready.status, "ready");
    assert.ok(ready.checks.length > 0, "no checks");
    for (const check of ready.checks) {
      assert.ok(check.name, `unnamed check ${JSON.stringify(check)}`);
      assert.equal(check.status, "ok", `check ${JSON.stringify(check)}`);
    }
  });

  test("an unknown route throws KilnProblemError not_found with the sent request id", async () => {
    const requestId = "sdk-ts-e2e-not-found";
    const err = await rejection(client.GET("/nope", { headers: { [REQUEST_ID_HEADER]: requestId } }));
    assertProblem(err, "not_found", 404);
    assert.equal(err.requestId, requestId);
  });

  test("a wrong method throws KilnProblemError method_not_allowed with a generated request id", async () => {
    const err = await rejection(client.POST("/health"));
    assertProblem(err, "method_not_allowed", 405);
    assert.equal(err.problem?.instance, "/health");
  });

  test("a token is sent as a bearer credential", async () => {
    const seen = [];
    const recordingFetch = (request) => {
      seen.push(request.headers.get("Authorization"));
      return fetch(request);
    };
    const withToken = createKilnClient({ baseUrl: kiln.baseUrl, token: "kiln_test_token", fetch: recordingFetch });
    const withTokenFn = createKilnClient({ baseUrl: kiln.baseUrl, token: async () => "fresh", fetch: recordingFetch });
    const anonymous = createKilnClient({ baseUrl: kiln.baseUrl, fetch: recordingFetch });
    for (const c of [withToken, withTokenFn, anonymous]) {
      await unwrap(c.GET("/health"));
    }
    assert.deepEqual(seen, ["Bearer kiln_test_token", "Bearer fresh", null]);
  });

  // One new account per run (kiln_test is shared); the tests below run in order on it.
  describe("identity", () => {
    const email = `sdk-ts-${randomUUID()}@example.com`;
    const password = "correct horse battery staple 9";
    /** @type {import("../dist/index.js").TokenPair} */
    let first;
    /** @type {import("../dist/index.js").TokenPair} */
    let pair;
    const as = (token) => ({ headers: { Authorization: `Bearer ${token}` } });

    test("sign-up answers 201 with a token pair, and login another", async () => {
      const signup = await client.POST("/v1/auth/signup", { body: { email, password, name: "SDK TS" } });
      assert.equal(signup.response.status, 201);
      first = await unwrap(signup);
      assert.equal(first.token_type, "Bearer");
      assert.ok(first.access_token && first.refresh_token && first.expires_in > 0, JSON.stringify(first));

      pair = await unwrap(client.POST("/v1/auth/login", { body: { email, password } }));
      assert.ok(pair.access_token && pair.access_token !== first.access_token);
    });

    test("GET /v1/me is the user, owner of their personal org", async () => {
      const me = await unwrap(client.GET("/v1/me", as(pair.access_token)));
      assert.equal(me.email, email);
      assert.equal(me.name, "SDK TS");
      const personal = me.orgs.find((org) => org.id === me.personal_org_id);
      assert.equal(personal?.role, "owner", JSON.stringify(me.orgs));
    });

    test("an admin key lists the keys; a chat key gets permission_denied", async () => {
      const create = (scope) =>
        unwrap(client.POST("/v1/api-keys", { body: { name: `sdk-ts ${scope}`, scopes: [scope] }, ...as(pair.access_token) }));
      const admin = await create("admin");
      assert.ok(admin.key.startsWith("kiln_"), admin.display);
      assert.deepEqual(admin.scopes, ["admin"]);

      const keys = await unwrap(client.GET("/v1/api-keys", as(admin.key)));
      assert.ok(
        keys.data.some((key) => key.id === admin.id),
        `key ${admin.id} not in ${JSON.stringify(keys.data.map((key) => key.id))}`,
      );

      const chat = await create("chat");
      assertProblem(await rejection(client.GET("/v1/api-keys", as(chat.key))), "permission_denied", 403);
    });

    test("refresh rotates the pair; reusing the spent token revokes the session", async () => {
      const next = await unwrap(client.POST("/v1/auth/refresh", { body: { refresh_token: first.refresh_token } }));
      assert.notEqual(next.access_token, first.access_token);
      assert.notEqual(next.refresh_token, first.refresh_token);
      await unwrap(client.GET("/v1/me", as(next.access_token)));

      const reuse = client.POST("/v1/auth/refresh", { body: { refresh_token: first.refresh_token } });
      assertProblem(await rejection(reuse), "unauthenticated", 401);
      assertProblem(await rejection(client.GET("/v1/me", as(next.access_token))), "unauthenticated", 401);
    });

    test("AuthSession refreshes on a 401 and stores the new pair; logout-all ends it", async () => {
      // A refused access token stands in for an expired one: the server answers every bad
      // credential with the same 401.
      const saved = [];
      const session = new AuthSession({
        baseUrl: kiln.baseUrl,
        tokens: { ...pair, access_token: "stale-access-token" },
        onRefresh: (tokens) => saved.push(tokens),
      });
      const user = createKilnClient({ baseUrl: kiln.baseUrl, fetch: session.fetch });
      const me = await unwrap(user.GET("/v1/me"));
      assert.equal(me.email, email);
      assert.notEqual(session.tokens.refresh_token, pair.refresh_token);
      assert.deepEqual(saved, [session.tokens]);

      const logout = await user.POST("/v1/auth/logout-all");
      assert.equal(logout.response.status, 204);
      for (const token of [session.tokens.access_token, pair.access_token]) {
        assertProblem(await rejection(client.GET("/v1/me", as(token))), "unauthenticated", 401);
      }
      // The session's refresh is refused too: the caller gets the 401.
      assertProblem(await rejection(user.GET("/v1/me")), "unauthenticated", 401);
      assert.equal(saved.length, 1);
    });
  });
});

/** Resolves to what promise rejects with; fails when it resolves. */
async function rejection(promise) {
  let data;
  try {
    data = await unwrap(promise);
  } catch (err) {
    return err;
  }
  assert.fail(`resolved with ${JSON.stringify(data)}, want a rejection`);
}

/** Asserts err is a KilnProblemError with the code and status whose request id is the X-Request-Id header. */
function assertProblem(err, code, status) {
  assert.ok(err instanceof KilnProblemError, `got ${err}, want KilnProblemError`);
  assert.equal(err.code, code, err.message);
  assert.equal(err.status, status, err.message);
  assert.equal(err.problem?.code, code);
  assert.ok(err.requestId, "empty request id");
  assert.equal(err.requestId, err.response?.headers.get(REQUEST_ID_HEADER));
  assert.equal(err.problem?.request_id, err.requestId);
}
