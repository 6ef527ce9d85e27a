// followJob against the real server: a new conversation's title job, followed to its end.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { createKilnClient, followJob, KilnProblemError, unwrap } from "../dist/index.js";
import { newAPIKey, startKiln } from "./kiln-server.mjs";

describe("followJob against the real server", () => {
  let kiln;
  let client;
  before(async () => {
    kiln = await startKiln();
    client = createKilnClient({ baseUrl: kiln.baseUrl, token: await newAPIKey(kiln.baseUrl, ["chat", "jobs"]) });
  });
  after(async () => {
    await kiln?.stop();
  });

  test("a conversation's title job, followed to job.succeeded, then again once finished", async () => {
    const conversation = await unwrap(client.POST("/v1/conversations", { body: {} }));
    await unwrap(
      client.POST("/v1/conversations/{id}/messages", {
        params: { path: { id: conversation.id } },
        body: { content: "plan a trip to Lisbon" },
      }),
    );
    const list = await unwrap(client.GET("/v1/jobs", { params: { query: { kind: "conversation.title" } } }));
    assert.equal(list.data.length, 1);
    const job = list.data[0];

    const types = [];
    const end = await followJob(client, job.id, { onEvent: (event) => void types.push(event.type) });
    assert.equal(end.state, "succeeded");
    assert.equal(end.job_id, job.id);
    assert.equal(types.at(-1), "job.succeeded");

    const again = await followJob(client, job.id);
    assert.equal(again.state, "succeeded");
  });

  test("an unknown job is a 404 problem", async () => {
    await assert.rejects(followJob(client, "0193a3c0-0000-7000-8000-0000000000ff"), (err) => {
      assert.ok(err instanceof KilnProblemError);
      assert.equal(err.status, 404);
      return true;
    });
  });
});
