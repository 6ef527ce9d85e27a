// AuthSession against a fake server: a fetch that takes the access token of its current
// pair only and rotates the pair on POST /v1/auth/refresh.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { AuthSession, createKilnClient, KilnProblemError, unwrap } from "../dist/index.js";

const baseUrl = "http://kiln.invalid";

const pair = (n) => ({ access_token: `access-${n}`, refresh_token: `refresh-${n}`, token_type: "Bearer", expires_in: 900 });

const json = (status, body) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

const unauthenticated = (requestId) =>
  new Response(
    JSON.stringify({
      type: "urn:kiln:problem:unauthenticated",
      title: "Unauthenticated",
      status: 401,
      code: "unauthenticated",
      detail: "Missing or invalid credentials.",
      request_id: requestId,
    }),
    { status: 401, headers: { "Content-Type": "application/problem+json" } },
  );

/** A fake Kiln whose current pair is number `current`; `refuse` makes every refresh a 401. */
function fakeKiln({ current = 1, refuse = false } = {}) {
  const server = {
    current,
    refreshes: 0,
    seen: [],
    async fetch(request) {
      const url = new URL(request.url);
      server.seen.push(request.headers.get("Authorization"));
      if (request.method === "POST" && url.pathname === "/v1/auth/refresh") {
        server.refreshes++;
        const { refresh_token } = await request.json();
        if (refuse || refresh_token !== `refresh-${server.current}`) {
          return unauthenticated("req-refresh");
        }
        await new Promise((resolve) => setTimeout(resolve, 20)); // lets concurrent 401s pile up
        server.current++;
        return json(200, pair(server.current));
      }
      if (request.headers.get("Authorization") !== `Bearer access-${server.current}`) {
        return unauthenticated("req-401");
      }
      if (request.method === "POST" && url.pathname === "/v1/orgs") {
        const { name } = await request.json();
        return json(201, { id: "0", name, personal: false, role: "owner", created_at: "2026-01-01T00:00:00Z" });
      }
      return json(200, { email: "a@example.com" });
    },
  };
  return server;
}

function sessionClient(server, options = {}) {
  const session = new AuthSession({ baseUrl, tokens: { ...pair(1), access_token: "expired" }, fetch: server.fetch, ...options });
  return { session, client: createKilnClient({ baseUrl, fetch: session.fetch }) };
}

describe("AuthSession", () => {
  test("refreshes once for concurrent 401s, resends bodies and stores the new pair", async () => {
    const server = fakeKiln();
    const saved = [];
    const { session, client } = sessionClient(server, { onRefresh: (tokens) => saved.push(tokens) });

    const names = ["a", "b", "c", "d", "e"];
    const orgs = await Promise.all(names.map((name) => unwrap(client.POST("/v1/orgs", { body: { name } }))));
    assert.deepEqual(
      orgs.map((org) => org.name),
      names,
    );
    assert.equal(server.refreshes, 1);
    assert.deepEqual(session.tokens, pair(2));
    assert.deepEqual(saved, [pair(2)]);

    // From now on the stored pair is sent, without another refresh.
    await unwrap(client.GET("/v1/me"));
    assert.equal(server.refreshes, 1);
    assert.equal(server.seen.at(-1), "Bearer access-2");
  });

  test("returns the first 401 when the refresh is refused", async () => {
    const server = fakeKiln({ refuse: true });
    const { session, client } = sessionClient(server);
    await assert.rejects(unwrap(client.GET("/v1/me")), (err) => {
      assert.ok(err instanceof KilnProblemError);
      assert.equal(err.code, "unauthenticated");
      assert.equal(err.requestId, "req-401");
      return true;
    });
    assert.equal(server.refreshes, 1);
    assert.equal(session.tokens.refresh_token, "refresh-1");
  });

  test("rethrows a refresh that fails otherwise", async () => {
    const failing = async (request) =>
      new URL(request.url).pathname === "/v1/auth/refresh" ? new Response("upstream down", { status: 502 }) : unauthenticated("req-401");
    const session = new AuthSession({ baseUrl, tokens: pair(1), fetch: failing });
    const client = createKilnClient({ baseUrl, fetch: session.fetch });
    await assert.rejects(client.GET("/v1/me"), (err) => err instanceof KilnProblemError && err.status === 502);
  });

  test("leaves requests with their own Authorization alone", async () => {
    const server = fakeKiln();
    const session = new AuthSession({ baseUrl, tokens: pair(1), fetch: server.fetch });
    const client = createKilnClient({ baseUrl, token: "kiln_dev_other", fetch: session.fetch });
    const { response } = await client.GET("/v1/me");
    assert.equal(response.status, 401);
    assert.equal(server.refreshes, 0);
    assert.deepEqual(server.seen, ["Bearer kiln_dev_other"]);
  });
});
