// The service map's HTTP endpoints: the page, graph.json with ETag/304, wrong paths and methods, and a page no pod name can break.
import assert from "node:assert/strict";
import { test } from "node:test";
import { endpoint, flow } from "../../flowapi/testing/flows.ts";
import { FlowGraph } from "./graph.ts";
import { ServiceMapServer } from "./server.ts";

async function serve(t: test.TestContext, fg: FlowGraph): Promise<string> {
  const server = new ServiceMapServer(() => fg.graph([]));
  const port = await server.listen(0);
  t.after(() => server.close());
  return `http://127.0.0.1:${port}`;
}

test("graph.json answers 304 while nothing changed and 200 with a new version after a flow", async (t) => {
  const fg = new FlowGraph();
  fg.add(flow());
  const url = await serve(t, fg);
  const first = await fetch(`${url}/servicemap/graph.json`);
  assert.equal(first.status, 200);
  const etag = first.headers.get("etag") ?? "";
  assert.equal(((await first.json()) as { edges: unknown[] }).edges.length, 1);
  assert.equal((await fetch(`${url}/servicemap/graph.json`, { headers: { "if-none-match": etag } })).status, 304);
  fg.add(flow({ destination: { ...flow().destination, port: 443 } }));
  const next = await fetch(`${url}/servicemap/graph.json`, { headers: { "if-none-match": etag } });
  assert.equal(next.status, 200);
  assert.notEqual(next.headers.get("etag"), etag);
});

test("the page is self-contained, and a hostile pod name stays text", async (t) => {
  const fg = new FlowGraph();
  fg.add(flow({ source: endpoint({ pod: "</script><script>alert(1)</script>" }) }));
  const url = await serve(t, fg);
  const res = await fetch(`${url}/servicemap`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  const html = await res.text();
  assert.equal(html.match(/<script/g)?.length, 3, "only the page's own three script elements");
  assert.doesNotMatch(html, /(src|href)=["']?https?:/, "nothing is fetched from elsewhere");
  assert.match(html, /default-src 'none'; connect-src 'self'/);
});

test("other paths are 404 with a pointer to the map, other methods 405, / redirects", async (t) => {
  const url = await serve(t, new FlowGraph());
  const missing = await fetch(`${url}/nope`);
  assert.equal(missing.status, 404);
  assert.match(await missing.text(), /the map is at \/servicemap/);
  assert.equal((await fetch(`${url}/servicemap`, { method: "POST" })).status, 405);
  const root = await fetch(`${url}/`, { redirect: "manual" });
  assert.equal(root.status, 302);
  assert.equal(root.headers.get("location"), "/servicemap");
});
