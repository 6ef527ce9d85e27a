// The prompt store through the SDK against the real server: create, version, publish,
// render, a refused render, and a chat that uses the prompt.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { createKilnClient, KilnProblemError, streamChatCompletion, unwrap } from "../dist/index.js";
import { newAPIKey, startKiln } from "./kiln-server.mjs";

describe("prompt store against kiln serve", () => {
  /** @type {Awaited<ReturnType<typeof startKiln>>} */
  let kiln;
  let client;
  before(async () => {
    kiln = await startKiln();
    // An admin-scoped key writes prompts; it also chats.
    const key = await newAPIKey(kiln.baseUrl, ["admin"]);
    client = createKilnClient({ baseUrl: kiln.baseUrl, token: key });
  });
  after(async () => {
    await kiln?.stop();
  });

  const version = (greeting) => ({
    messages: [{ role: "system", content: `${greeting} Talk about {{topic}}.` }],
    variables: [{ name: "topic", type: "string", required: true }],
  });

  test("create, publish, render and chat", async () => {
    await unwrap(client.POST("/v1/prompts", { body: { name: "greeter", version: version("Hello.") } }));
    const v2 = await unwrap(client.POST("/v1/prompts/{name}/versions", { params: { path: { name: "greeter" } }, body: version("Good evening.") }));
    assert.equal(v2.version, 2);
    await unwrap(
      client.PUT("/v1/prompts/{name}/labels/{label}", { params: { path: { name: "greeter", label: "production" } }, body: { version: 2 } }),
    );

    const rendered = await unwrap(
      client.POST("/v1/prompts/{name}/render", {
        params: { path: { name: "greeter" } },
        body: { label: "production", variables: { topic: "tea" } },
      }),
    );
    assert.equal(rendered.version, 2);
    assert.deepEqual(rendered.messages, [{ role: "system", content: "Good evening. Talk about tea." }]);

    await assert.rejects(
      unwrap(client.POST("/v1/prompts/{name}/render", { params: { path: { name: "greeter" } }, body: { label: "production", variables: {} } })),
      (err) => err instanceof KilnProblemError && err.problem.code === "invalid_request" && err.problem.status === 400,
    );

    const stream = await streamChatCompletion(client, {
      prompt: { name: "greeter", variables: { topic: "tea" } },
      messages: [{ role: "user", content: "hi" }],
    });
    const result = await stream.collect();
    assert.ok(result.usage && result.usage.prompt_tokens >= 10, `usage ${JSON.stringify(result.usage)}: the prompt's messages were not sent`);
  });
});
