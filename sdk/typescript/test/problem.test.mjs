import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { isProblem, KilnProblemError, REQUEST_ID_HEADER, unwrap } from "../dist/index.js";

const notFound = {
  type: "urn:kiln:problem:not_found",
  title: "Not found",
  status: 404,
  code: "not_found",
  detail: "No route matches GET /nope.",
  instance: "/nope",
  request_id: "from-body",
};

describe("isProblem", () => {
  for (const [name, value, want] of [
    ["a problem document", notFound, true],
    ["a problem without request_id", { ...notFound, request_id: undefined }, false],
    ["another JSON error", { error: "boom" }, false],
    ["text", "Bad Gateway", false],
    ["null", null, false],
    ["undefined", undefined, false],
  ]) {
    test(`${name}: ${want}`, () => assert.equal(isProblem(value), want));
  }
});

describe("KilnProblemError", () => {
  test("from a problem document", () => {
    const response = new Response(null, { status: 404, headers: { [REQUEST_ID_HEADER]: "from-header" } });
    const err = new KilnProblemError(response, notFound);
    assert.equal(err.name, "KilnProblemError");
    assert.equal(err.code, "not_found");
    assert.equal(err.status, 404);
    assert.equal(err.requestId, "from-body");
    assert.deepEqual(err.problem, notFound);
    assert.equal(err.response, response);
    assert.equal(err.message, "not_found (404): No route matches GET /nope. (request_id from-body)");
    assert.ok(err instanceof Error);
  });

  test("from a body that is not a problem document", () => {
    const response = new Response(null, {
      status: 502,
      statusText: "Bad Gateway",
      headers: { [REQUEST_ID_HEADER]: "from-header" },
    });
    const err = new KilnProblemError(response, `upstream connect error\n${"x".repeat(600)}`);
    assert.equal(err.code, undefined);
    assert.equal(err.problem, undefined);
    assert.equal(err.status, 502);
    assert.equal(err.requestId, "from-header");
    assert.equal(err.message, `HTTP 502: upstream connect error\n${"x".repeat(489)} (request_id from-header)`);
  });

  test("from an empty body", () => {
    const err = new KilnProblemError(new Response(null, { status: 503, statusText: "Service Unavailable" }), undefined);
    assert.equal(err.requestId, "");
    assert.equal(err.message, "HTTP 503: Service Unavailable");
  });
});

describe("unwrap", () => {
  test("returns data of a 2xx result", async () => {
    const data = await unwrap({ data: { status: "ok" }, response: new Response(null, { status: 200 }) });
    assert.deepEqual(data, { status: "ok" });
  });

  test("throws KilnProblemError for a non-2xx result", async () => {
    const result = Promise.resolve({ error: notFound, response: new Response(null, { status: 404 }) });
    await assert.rejects(unwrap(result), (err) => err instanceof KilnProblemError && err.code === "not_found");
  });
});
