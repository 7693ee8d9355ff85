// The service map model: flows become pods and edges coloured by verdict, services attach by selector, the layout groups by namespace.
import assert from "node:assert/strict";
import { test } from "node:test";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";
import { FlowGraph, endpointInfo, serviceRefOf, type MapNode, type ServiceGraph, type ServiceRef } from "./graph.ts";

const WEB_SVC: ServiceRef = { namespace: "shop", name: "web", selector: { app: "web" } };
const node = (g: ServiceGraph, id: string): MapNode => {
  const n = g.nodes.find((x) => x.id === id);
  assert.ok(n, `node ${id} in ${g.nodes.map((x) => x.id).join(", ")}`);
  return n;
};
const inside = (n: MapNode, box: { x: number; y: number; width: number; height: number }): boolean =>
  n.x >= box.x && n.y >= box.y && n.x + n.width <= box.x + box.width && n.y + n.height <= box.y + box.height;

test("a forwarded and a dropped flow become two pods and one edge each, coloured by verdict", () => {
  const fg = new FlowGraph();
  fg.add(flow());
  fg.add(dropFlow({ destination: endpoint({ identity: 300, labels: ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"], namespace: "shop", pod: "web-0", ip: "10.0.1.5", port: 9000 }) }));
  const g = fg.graph([]);
  assert.deepEqual(g.nodes.map((n) => n.id).sort(), ["pod:default/client-1", "pod:shop/web-0"]);
  const byPort = new Map(g.edges.map((e) => [e.port, e]));
  assert.equal(byPort.get(80)?.verdict, "allowed");
  assert.equal(byPort.get(80)?.decidedBy, "CiliumNetworkPolicy shop/allow-web spec.ingress[0]");
  assert.equal(byPort.get(9000)?.verdict, "denied");
  assert.equal(byPort.get(9000)?.dropReason, "policy denied (default deny)");
  assert.equal(byPort.get(9000)?.decidedBy, "default deny");
  for (const e of g.edges) {
    assert.equal(e.from, "pod:default/client-1");
    assert.equal(e.to, "pod:shop/web-0");
  }
});

test("the newest flow decides an edge's colour, whatever order the agents deliver in; counts add up", () => {
  const fg = new FlowGraph();
  fg.add(flow({ time: "2026-01-01T00:00:01.000Z" }));
  fg.add(dropFlow({ time: "2026-01-01T00:00:03.000Z", destination: flow().destination }));
  fg.add(flow({ time: "2026-01-01T00:00:02.000Z" })); // late, from another node
  const [e] = fg.graph([]).edges;
  assert.equal(e?.verdict, "denied");
  assert.equal(e?.forwarded, 2);
  assert.equal(e?.dropped, 1);
  assert.equal(e?.lastSeen, "2026-01-01T00:00:03.000Z");
  fg.add(flow({ time: "2026-01-01T00:00:04.000Z" })); // the policy now allows it
  assert.equal(fg.graph([]).edges[0]?.verdict, "allowed");
  fg.add(flow({ time: "2026-01-01T00:00:05.000Z", type: "trace", decidedBy: undefined }));
  assert.equal(fg.graph([]).edges[0]?.verdict, "unenforced");
});

test("ingress and egress flows of one connection are one edge; another port or protocol is another", () => {
  const fg = new FlowGraph();
  fg.add(flow({ direction: "egress", node: "node-a" }));
  fg.add(flow({ direction: "ingress", node: "node-b" }));
  fg.add(flow({ protocol: "UDP" }));
  fg.add(flow({ destination: { ...flow().destination, port: 443 } }));
  const g = fg.graph([]);
  assert.equal(g.edges.length, 3);
  assert.equal(g.edges.find((e) => e.protocol === "TCP" && e.port === 80)?.forwarded, 2);
});

test("pods behind a Service are grouped in its box; the selector matches the pod's labels in the Service's namespace only", () => {
  const fg = new FlowGraph();
  fg.add(flow());
  // Same app label in another namespace: not behind shop/web.
  fg.add(flow({ destination: endpoint({ identity: 301, labels: ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=staging"], namespace: "staging", pod: "web-0", ip: "10.0.2.5", port: 80 }) }));
  const services = [WEB_SVC, { namespace: "shop", name: "headless", selector: {} }, { namespace: "shop", name: "admin", selector: { app: "admin" } }];
  const g = fg.graph(services);
  const web = node(g, "pod:shop/web-0");
  assert.deepEqual(web.services, ["shop/web"]);
  assert.deepEqual(node(g, "pod:staging/web-0").services, []);
  assert.deepEqual(node(g, "pod:default/client-1").services, []);
  const box = g.services.find((s) => s.id === "svc:shop/web");
  assert.ok(box);
  assert.deepEqual(box.pods, ["pod:shop/web-0"]);
  assert.ok(inside(web, box), "the pod is drawn inside its service's box");
  // A service with no selector, or whose pods sent no flow, is still shown, with no pods.
  assert.deepEqual(g.services.find((s) => s.id === "svc:shop/headless")?.pods, []);
  assert.deepEqual(g.services.find((s) => s.id === "svc:shop/admin")?.pods, []);
});

test("nodes are grouped by namespace in columns, the outside column last, and never overlap", () => {
  const fg = new FlowGraph();
  fg.add(flow());
  fg.add(flow({ source: endpoint({ identity: 2, labels: ["reserved:world"], namespace: undefined, pod: undefined, ip: "1.2.3.4" }) }));
  fg.add(flow({ source: endpoint({ identity: 257, labels: ["k8s:app=batch", "k8s:io.kubernetes.pod.namespace=ops"], namespace: "ops", pod: "job-1", ip: "10.0.3.1" }) }));
  fg.add(flow({ source: endpoint({ identity: 258, labels: ["k8s:app=batch", "k8s:io.kubernetes.pod.namespace=ops"], namespace: "ops", pod: "job-2", ip: "10.0.3.2" }) }));
  const g = fg.graph([WEB_SVC]);
  assert.deepEqual(g.namespaces.map((n) => n.name), ["default", "ops", "shop", ""]);
  for (const n of g.nodes) {
    const group = g.namespaces.find((ns) => ns.name === n.namespace);
    assert.ok(group && inside(n, group), `${n.id} inside its namespace's column`);
  }
  for (const a of g.nodes)
    for (const b of g.nodes) {
      if (a === b) continue;
      const apart = a.x + a.width <= b.x || b.x + b.width <= a.x || a.y + a.height <= b.y || b.y + b.height <= a.y;
      assert.ok(apart, `${a.id} and ${b.id} overlap`);
    }
  assert.equal(node(g, "reserved:world").namespace, "");
  assert.ok(g.width >= Math.max(...g.nodes.map((n) => n.x + n.width)));
  assert.ok(g.height >= Math.max(...g.nodes.map((n) => n.y + n.height)));
});

test("each edge runs from its source's side to its destination's side through its label point, which lies in a gap, never on a pod", () => {
  const fg = new FlowGraph();
  fg.add(flow());
  fg.add(dropFlow({ destination: { ...flow().destination, port: 9000 } }));
  fg.add(flow({ source: flow().destination, destination: { ...flow().source, port: 5432 } })); // the reverse direction
  fg.add(flow({ source: endpoint({ namespace: "shop", pod: "cron-1", ip: "10.0.1.7" }) })); // within one namespace
  const g = fg.graph([]);
  assert.equal(g.edges.length, 4);
  assert.equal(new Set(g.edges.map((e) => `${e.mx},${e.my}`)).size, 4, "no two labels in one place");
  for (const e of g.edges) {
    const [from, to] = [node(g, e.from), node(g, e.to)];
    const nums = e.path.match(/-?\d+(\.\d+)?/g)?.map(Number) ?? [];
    const [x1, y1] = nums;
    const [x2, y2] = nums.slice(-2);
    assert.ok(x1 === from.x || x1 === from.x + from.width, `${e.id} starts on a side of its source`);
    assert.equal(y1, from.y + from.height / 2);
    assert.ok(x2 === to.x || x2 === to.x + to.width, `${e.id} ends on a side of its destination`);
    assert.ok(y2! > to.y && y2! < to.y + to.height, `${e.id} ends on its destination`);
    assert.match(e.path, new RegExp(` ${e.mx} ${e.my} C `), `${e.id} passes through its label point`);
    for (const ns of g.namespaces) assert.ok(e.mx < ns.x || e.mx > ns.x + ns.width, `${e.id}'s label is outside the column of ${ns.name}`);
  }
});

test("endpoints without a pod name: by identity when namespaced, reserved entities and bare addresses outside", () => {
  assert.equal(endpointInfo(endpoint({ pod: undefined, namespace: undefined, identity: 300, labels: ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"] })).id, "identity:300");
  assert.equal(endpointInfo(endpoint({ pod: undefined, namespace: undefined, identity: 300, labels: ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"] })).label, "web (identity 300)");
  assert.equal(endpointInfo(endpoint({ pod: undefined, namespace: undefined, identity: 1, labels: ["reserved:host"] })).id, "reserved:host");
  const bare = endpointInfo(endpoint({ pod: undefined, namespace: undefined, identity: 16777217, labels: ["cidr:192.0.2.0/24"], ip: "192.0.2.7" }));
  assert.equal(bare.id, "ip:192.0.2.7");
  assert.equal(bare.namespace, "");
});

test("the graph is bounded: the least recently seen edge goes first, and its pods with it", () => {
  const fg = new FlowGraph({ maxEdges: 3 });
  for (let i = 0; i < 10; i++) fg.add(flow({ source: endpoint({ pod: `client-${i}`, ip: `10.0.0.${i}` }) }));
  fg.add(flow({ source: endpoint({ pod: "client-7", ip: "10.0.0.7" }) })); // seen again: now the freshest
  fg.add(flow({ source: endpoint({ pod: "client-10", ip: "10.0.0.10" }) }));
  assert.equal(fg.edgeCount, 3);
  assert.equal(fg.endpointCount, 4); // three clients and web-0
  const g = fg.graph([]);
  assert.deepEqual(g.nodes.map((n) => n.id).sort(), ["pod:default/client-10", "pod:default/client-7", "pod:default/client-9", "pod:shop/web-0"]);
});

test("the version changes with every flow and with the services' version, and only then", () => {
  const fg = new FlowGraph();
  const v0 = fg.graph([], 0).version;
  assert.equal(fg.graph([], 0).version, v0);
  fg.add(flow());
  const v1 = fg.graph([], 0).version;
  assert.notEqual(v1, v0);
  assert.notEqual(fg.graph([WEB_SVC], 1).version, v1);
});

test("Service objects: the selector is spec.selector; none means no pods", () => {
  assert.deepEqual(serviceRefOf({ metadata: { name: "web", namespace: "shop" }, spec: { selector: { app: "web" } } }), WEB_SVC);
  assert.deepEqual(serviceRefOf({ metadata: { name: "ext", namespace: "shop" }, spec: {} }).selector, {});
  assert.deepEqual(serviceRefOf({ metadata: { name: "ext", namespace: "shop" }, spec: { selector: null } }).selector, {});
});
