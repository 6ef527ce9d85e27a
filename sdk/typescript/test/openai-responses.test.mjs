// OpenAI's official SDK (the `openai` package) against the real server's Responses API at
// /openai/v1/responses, with a Kiln API key, served by the offline dev provider.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { newAPIKey, startKiln } from "./kiln-server.mjs";

describe("the openai SDK's responses against kiln serve", () => {
  /** @type {Awaited<ReturnType<typeof startKiln>>} */
  let kiln;
  /** @type {OpenAI} */
  let openai;

  before(async () => {
    kiln = await startKiln();
    openai = new OpenAI({ baseURL: `${kiln.baseUrl}/openai/v1`, apiKey: await newAPIKey(kiln.baseUrl), maxRetries: 0 });
  });

  after(async () => {
    if (kiln) {
      const { code, signal } = await kiln.stop();
      assert.equal(code, 0, `kiln serve exited with ${code ?? signal} after SIGTERM, want 0\n${kiln.logs()}`);
    }
  });

  const tools = [
    {
      type: "function",
      name: "get_weather",
      description: "The weather in a city.",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      strict: false,
    },
  ];

  test("responses.create, then retrieve and delete", async () => {
    const response = await openai.responses.create({
      model: "default",
      instructions: "Be brief.",
      input: "hello from the openai SDK",
      metadata: { team: "docs" },
    });
    assert.match(response.id, /^resp_/);
    assert.equal(response.object, "response");
    assert.equal(response.status, "completed");
    assert.equal(response.output_text, "[dev] You said: hello from the openai SDK");
    assert.equal(response.instructions, "Be brief.");
    assert.deepEqual(response.metadata, { team: "docs" });
    assert.ok(response.usage && response.usage.input_tokens > 0 && response.usage.output_tokens > 0);
    assert.equal(response.usage.total_tokens, response.usage.input_tokens + response.usage.output_tokens);

    const read = await openai.responses.retrieve(response.id);
    assert.equal(read.id, response.id);
    assert.equal(read.output_text, response.output_text);

    await openai.responses.delete(response.id);
    await assert.rejects(openai.responses.retrieve(response.id), (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `${err?.constructor?.name}: ${err}`);
      assert.equal(err.type, "not_found_error");
      return true;
    });
  });

  test("responses.create with stream: true yields the response.* events in order", async () => {
    const stream = await openai.responses.create({ model: "default", input: "stream this reply please", stream: true });
    const types = [];
    let text = "";
    let final;
    for await (const event of stream) {
      assert.equal(event.sequence_number, types.length);
      types.push(event.type);
      if (event.type === "response.output_text.delta") {
        text += event.delta;
      }
      if (event.type === "response.completed") {
        final = event.response;
      }
    }
    assert.deepEqual(types.slice(0, 4), [
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
    ]);
    assert.deepEqual(types.slice(-4), [
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    assert.equal(text, "[dev] You said: stream this reply please");
    assert.equal(final.status, "completed");
    assert.equal(final.output[0].content[0].text, text);
  });

  test("function tools round trip: a call, then its output with previous_response_id", async () => {
    // The SDK's stream helper checks the events against each other as it assembles them.
    const first = await openai.responses
      .stream({ model: "default", input: "Please call get_weather: Paris", tools })
      .finalResponse();
    const call = first.output.find((item) => item.type === "function_call");
    assert.ok(call, JSON.stringify(first.output));
    assert.equal(call.name, "get_weather");
    assert.deepEqual(JSON.parse(call.arguments), { city: "Paris" });
    assert.ok(call.call_id);

    const answer = await openai.responses.create({
      model: "default",
      previous_response_id: first.id,
      tools,
      input: [{ type: "function_call_output", call_id: call.call_id, output: "sunny, 21 °C" }],
    });
    assert.equal(answer.previous_response_id, first.id);
    assert.equal(answer.output_text, "[dev] The tool get_weather returned: sunny, 21 °C");
  });

  test("a follow-up by previous_response_id continues the conversation", async () => {
    const first = await openai.responses.create({ model: "default", input: "my name is Ada" });
    const alone = await openai.responses.create({ model: "default", input: "what is my name?" });
    const next = await openai.responses.create({ model: "default", input: "what is my name?", previous_response_id: first.id });
    assert.equal(next.previous_response_id, first.id);
    assert.equal(next.output_text, "[dev] You said: what is my name?");
    assert.ok(
      next.usage.input_tokens > alone.usage.input_tokens,
      `the follow-up reads the earlier turns: ${next.usage.input_tokens} input tokens, ${alone.usage.input_tokens} alone`,
    );
  });

  test("errors: an unknown previous_response_id is a NotFoundError naming the param", async () => {
    await assert.rejects(
      openai.responses.create({ model: "default", input: "hi", previous_response_id: "resp_0123" }),
      (err) => {
        assert.ok(err instanceof OpenAI.NotFoundError, `${err?.constructor?.name}: ${err}`);
        assert.equal(err.param, "previous_response_id");
        return true;
      },
    );
  });
});
