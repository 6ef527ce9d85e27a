// OpenAI's official SDK (the `openai` package) against the real server's OpenAI-compatible
// surface at /openai/v1, with a Kiln API key, served by the offline dev provider.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { newAPIKey, startKiln } from "./kiln-server.mjs";

describe("the openai SDK against kiln serve", () => {
  /** @type {Awaited<ReturnType<typeof startKiln>>} */
  let kiln;
  /** @type {OpenAI} */
  let openai;
  let apiKey;
  /** The JSON bodies the SDK sent, in order. */
  const sent = [];

  before(async () => {
    kiln = await startKiln();
    apiKey = await newAPIKey(kiln.baseUrl);
    openai = new OpenAI({
      baseURL: `${kiln.baseUrl}/openai/v1`,
      apiKey,
      maxRetries: 0,
      fetch: (url, init) => {
        if (typeof init?.body === "string") {
          sent.push(JSON.parse(init.body));
        }
        return fetch(url, init);
      },
    });
  });

  after(async () => {
    if (kiln) {
      const { code, signal } = await kiln.stop();
      assert.equal(code, 0, `kiln serve exited with ${code ?? signal} after SIGTERM, want 0\n${kiln.logs()}`);
    }
  });

  test("chat.completions.create", async () => {
    const completion = await openai.chat.completions.create({
      model: "default",
      messages: [{ role: "user", content: "hello from the openai SDK" }],
    });
    assert.equal(completion.object, "chat.completion");
    assert.equal(completion.model, "default");
    assert.equal(completion.choices.length, 1);
    const [choice] = completion.choices;
    assert.equal(choice.message.role, "assistant");
    assert.equal(choice.message.content, "[dev] You said: hello from the openai SDK");
    assert.equal(choice.finish_reason, "stop");
    assert.ok(completion.usage && completion.usage.prompt_tokens > 0 && completion.usage.completion_tokens > 0);
    assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + completion.usage.completion_tokens);
  });

  test("chat.completions.create with stream and stream_options.include_usage", async () => {
    const stream = await openai.chat.completions.create({
      model: "default",
      messages: [{ role: "user", content: "stream this reply please" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let content = "";
    let finish;
    const usageChunks = [];
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, "chat.completion.chunk");
      for (const choice of chunk.choices) {
        content += choice.delta.content ?? "";
        finish = choice.finish_reason ?? finish;
      }
      if (chunk.usage) {
        usageChunks.push(chunk);
      }
    }
    assert.ok(chunks > 2, `${chunks} chunks`);
    assert.equal(content, "[dev] You said: stream this reply please");
    assert.equal(finish, "stop");
    assert.equal(usageChunks.length, 1);
    const [last] = usageChunks;
    assert.deepEqual(last.choices, [], "the usage chunk has no choices");
    assert.ok(last.usage.prompt_tokens > 0 && last.usage.completion_tokens > 0, JSON.stringify(last.usage));
    assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  });

  const tools = [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "The weather in a city.",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      },
    },
  ];

  test("tools: a tool call for the tool the message names, then the answer to its result", async () => {
    const messages = [{ role: "user", content: "Please call get_weather: Paris" }];
    const first = await openai.chat.completions.create({ model: "default", messages, tools });
    const [choice] = first.choices;
    assert.equal(choice.finish_reason, "tool_calls");
    const call = choice.message.tool_calls?.[0];
    assert.equal(choice.message.tool_calls?.length, 1, JSON.stringify(choice.message));
    assert.equal(call.type, "function");
    assert.equal(call.function.name, "get_weather");
    assert.deepEqual(JSON.parse(call.function.arguments), { city: "Paris" });
    assert.ok(call.id);

    const answer = await openai.chat.completions.create({
      model: "default",
      tools,
      messages: [...messages, choice.message, { role: "tool", tool_call_id: call.id, content: "sunny, 21 °C" }],
    });
    assert.equal(answer.choices[0].finish_reason, "stop");
    assert.equal(answer.choices[0].message.content, "[dev] The tool get_weather returned: sunny, 21 °C");
  });

  test("tools, streamed: the SDK's stream helper assembles the tool call from its deltas", async () => {
    const runner = openai.chat.completions.stream({
      model: "default",
      messages: [{ role: "user", content: "Please call get_weather: Oslo" }],
      tools,
    });
    const completion = await runner.finalChatCompletion();
    const [choice] = completion.choices;
    assert.equal(choice.finish_reason, "tool_calls");
    assert.equal(choice.message.tool_calls?.length, 1, JSON.stringify(choice.message));
    assert.equal(choice.message.tool_calls[0].function.name, "get_weather");
    assert.deepEqual(JSON.parse(choice.message.tool_calls[0].function.arguments), { city: "Oslo" });
  });

  test("embeddings.create: base64 on the wire, decoded to the same vector for the same input", async () => {
    const before = sent.length;
    const one = await openai.embeddings.create({ model: "default", input: "kiln embeds text" });
    assert.equal(sent[before]?.encoding_format, "base64", "the SDK asks for base64");
    assert.equal(one.object, "list");
    assert.equal(one.data.length, 1);
    const vector = one.data[0].embedding;
    assert.ok(Array.isArray(vector), `embedding is ${typeof vector}, want an array of numbers`);
    assert.equal(vector.length, 256); // the dev provider's dimensions
    assert.ok(vector.every((x) => typeof x === "number" && Number.isFinite(x)));
    assert.ok(vector.some((x) => x !== 0));
    assert.ok(one.usage.prompt_tokens > 0);

    const both = await openai.embeddings.create({ model: "default", input: ["kiln embeds text", "something else"] });
    assert.deepEqual(both.data[0].embedding, vector, "the same input, the same vector");
    assert.notDeepEqual(both.data[1].embedding, vector);
    assert.deepEqual(
      both.data.map((d) => d.index),
      [0, 1],
    );

    const floats = await openai.embeddings.create({ model: "default", input: "kiln embeds text", encoding_format: "float" });
    assert.equal(floats.data[0].embedding.length, 256);
    floats.data[0].embedding.forEach((x, i) => assert.ok(Math.abs(x - vector[i]) < 1e-6, `dimension ${i}: ${x} vs ${vector[i]}`));
  });

  test("models.list lists the aliases", async () => {
    const ids = [];
    for await (const model of openai.models.list()) {
      assert.equal(model.object, "model");
      ids.push(model.id);
    }
    assert.ok(ids.includes("default"), JSON.stringify(ids));
  });

  test("an unknown model throws NotFoundError (404)", async () => {
    await assert.rejects(
      openai.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }),
      (err) => {
        assert.ok(err instanceof OpenAI.NotFoundError, `${err?.constructor?.name}: ${err}`);
        assert.equal(err.status, 404);
        assert.equal(err.type, "not_found_error");
        assert.equal(err.code, "not_found");
        assert.match(err.message, /no-such-model/);
        return true;
      },
    );
    await assert.rejects(
      openai.embeddings.create({ model: "no-such-model", input: "hi" }),
      (err) => err instanceof OpenAI.NotFoundError && err.status === 404,
    );
  });

  test("a bad key throws AuthenticationError (401)", async () => {
    const wrong = new OpenAI({ baseURL: `${kiln.baseUrl}/openai/v1`, apiKey: "kiln_not_a_real_key", maxRetries: 0 });
    for (const call of [
      () => wrong.chat.completions.create({ model: "default", messages: [{ role: "user", content: "hi" }] }),
      () => wrong.models.list(),
    ]) {
      await assert.rejects(call(), (err) => {
        assert.ok(err instanceof OpenAI.AuthenticationError, `${err?.constructor?.name}: ${err}`);
        assert.equal(err.status, 401);
        assert.equal(err.type, "authentication_error");
        return true;
      });
    }
  });
});
