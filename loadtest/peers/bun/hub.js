// An in-memory reference hub on Bun (`Bun.serve`, uWebSockets underneath) that speaks
// livehub's buyer protocol (docs/protocol.md, "Buyer WebSocket") closely enough for
// livehub-loadtest's scenarios: the peer each livehub figure is measured beside.
//
// What it keeps: SKUs with stock that never goes below zero, units per user and SKU for
// `limit_per_user`, and every ok ack by (user, req) so that a repeated `req` gets the same
// order. What it does not: durability (nothing is written anywhere), auth (buyers connect
// with `?user=`, like livehub's `--open-buyers`), rate limits, rooms (every socket is in one).
//
// Control frames, from a socket opened with `control=1` in its query (the load tool's
// control socket), set the sale up the way livehub's admin REST would:
//   {"op":"define","sku":"A1","price_fen":9900,"stock":1000,"limit_per_user":null,"open":false}
//     -> {"op":"defined","sku":"A1"}   (creates or redefines; a redefinition resets its sales)
//   {"op":"open","sku":"A1"}
//     -> {"op":"opened","sku":"A1"}, and the `sale` push to every buyer socket
//
// Run: `bun hub.js --listen 127.0.0.1:0`; it says `bun peer listening on ADDR` on stderr.

const QTY_MAX = 1_000_000;
const ID = /^[A-Za-z0-9_.:-]{1,64}$/;
// `stock` pushes per SKU start at least this far apart, as livehub's (docs/protocol.md).
const STOCK_PUSH_EVERY_MS = 100;
// Every buyer socket subscribes to this topic; the sale's pushes are published to it.
const PUSHES = "pushes";
// `opens_at_ms` of a SKU that waits for its `open` (2100-01-01, as the load tool sets livehub's).
const FAR_FUTURE_MS = 4_102_444_800_000;

function parseArgs(argv) {
  let listen = "127.0.0.1:18791";
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--listen" && i + 1 < argv.length) listen = argv[++i];
    else if (argv[i].startsWith("--listen=")) listen = argv[i].slice("--listen=".length);
  }
  const cut = listen.lastIndexOf(":");
  return { hostname: listen.slice(0, cut), port: Number(listen.slice(cut + 1)) };
}

/** One SKU: its sale is open from its `open` on, or from its `define` with `open: true`. */
class Sku {
  constructor(id, priceFen, stock, limit, open) {
    this.id = id;
    this.priceFen = priceFen;
    this.stockTotal = stock;
    this.left = stock;
    this.limit = limit;
    this.open = open;
    this.opensAtMs = open ? Date.now() : FAR_FUTURE_MS;
    this.stockPushAt = 0;
    this.stockPushTimer = null;
  }

  get state() {
    if (!this.open) return "scheduled";
    return this.left === 0 ? "sold_out" : "open";
  }

  json() {
    return {
      sku: this.id,
      name: this.id,
      price_fen: this.priceFen,
      stock_total: this.stockTotal,
      sold: this.stockTotal - this.left,
      left: this.left,
      limit_per_user: this.limit,
      state: this.state,
      opens_at_ms: this.opensAtMs,
      closes_at_ms: null,
    };
  }

  saleFrame() {
    return JSON.stringify({
      op: "sale",
      sku: this.id,
      state: this.state,
      opens_at_ms: this.opensAtMs,
      closes_at_ms: null,
    });
  }
}

const skus = new Map();
// `${user}\n${req}` -> the ok ack, as first sent.
const acks = new Map();
// `${user}\n${sku}` -> units the user holds of the SKU.
const held = new Map();
let orders = 0;
let server;

function rejected(req, error, sku) {
  const a = { op: "ack", req, ok: false, error };
  if (sku) {
    a.sku = sku.id;
    a.left = sku.left;
  }
  return JSON.stringify(a);
}

function badRequest(detail, req) {
  const e = { op: "error", error: "bad_request", detail };
  if (typeof req === "string" && ID.test(req)) e.req = req;
  return JSON.stringify(e);
}

/** `left` changed: one `stock` push per SKU at most every STOCK_PUSH_EVERY_MS. */
function stockChanged(sku) {
  if (sku.stockPushTimer) return;
  const wait = Math.max(0, sku.stockPushAt + STOCK_PUSH_EVERY_MS - Date.now());
  sku.stockPushTimer = setTimeout(() => {
    sku.stockPushTimer = null;
    sku.stockPushAt = Date.now();
    server.publish(PUSHES, JSON.stringify({ op: "stock", sku: sku.id, left: sku.left, state: sku.state }));
  }, wait);
}

/** The answer to a buy by `user`: livehub's checks in livehub's order, all in memory. */
function buy(user, m) {
  const { req, qty } = m;
  if (typeof req !== "string" || !ID.test(req)) return badRequest("req must be an id", req);
  if (typeof m.sku !== "string" || !ID.test(m.sku)) return badRequest("sku must be an id", req);
  if (!Number.isInteger(qty) || qty < 1 || qty > QTY_MAX) {
    return badRequest("qty must be an integer from 1 to 1000000", req);
  }
  const key = user + "\n" + req;
  const first = acks.get(key);
  if (first !== undefined) return first;
  const sku = skus.get(m.sku);
  if (!sku) return rejected(req, "unknown_sku");
  if (!sku.open) return rejected(req, "not_open", sku);
  const hk = user + "\n" + sku.id;
  const has = held.get(hk) ?? 0;
  if (sku.limit !== null && has + qty > sku.limit) return rejected(req, "limit_exceeded", sku);
  if (sku.left === 0) return rejected(req, "sold_out", sku);
  if (sku.left < qty) return rejected(req, "insufficient_stock", sku);
  sku.left -= qty;
  held.set(hk, has + qty);
  orders += 1;
  const ack = JSON.stringify({
    op: "ack",
    req,
    ok: true,
    order: "B" + orders,
    sku: sku.id,
    qty,
    amount_fen: sku.priceFen * qty,
    left: sku.left,
  });
  acks.set(key, ack);
  if (sku.left === 0) server.publish(PUSHES, sku.saleFrame());
  stockChanged(sku);
  return ack;
}

function control(m) {
  if (typeof m.sku !== "string" || !ID.test(m.sku)) return badRequest("sku must be an id");
  if (m.op === "define") {
    const limit = m.limit_per_user ?? null;
    const sku = new Sku(m.sku, m.price_fen ?? 0, m.stock ?? 0, limit, m.open === true);
    skus.set(m.sku, sku);
    for (const k of held.keys()) if (k.endsWith("\n" + m.sku)) held.delete(k);
    server.publish(PUSHES, sku.saleFrame());
    return JSON.stringify({ op: "defined", sku: m.sku });
  }
  const sku = skus.get(m.sku);
  if (!sku) return badRequest("unknown sku");
  if (!sku.open) {
    sku.open = true;
    sku.opensAtMs = Date.now();
  }
  server.publish(PUSHES, sku.saleFrame());
  return JSON.stringify({ op: "opened", sku: m.sku });
}

function answer(ws, text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return badRequest("not JSON");
  }
  if (m === null || typeof m !== "object" || Array.isArray(m)) return badRequest("not an object");
  switch (m.op) {
    case "buy":
      return buy(ws.data.user, m);
    case "ping":
      return JSON.stringify({ op: "pong", server_time_ms: Date.now() });
    case "status": {
      if (typeof m.req !== "string" || !ID.test(m.req)) return badRequest("req must be an id", m.req);
      return acks.get(ws.data.user + "\n" + m.req) ?? rejected(m.req, "unknown_request");
    }
    case "define":
    case "open":
      if (ws.data.control) return control(m);
    // fall through: a buyer may not do this
    default:
      return badRequest("unknown op", m.req);
  }
}

const { hostname, port } = parseArgs(process.argv.slice(2));
server = Bun.serve({
  hostname,
  port,
  fetch(request, srv) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return new Response("ok\n");
    if (url.pathname !== "/ws/buy") return new Response("not found\n", { status: 404 });
    const user = url.searchParams.get("user");
    if (!user || !ID.test(user)) return new Response("user must be an id\n", { status: 400 });
    const data = {
      user,
      room: url.searchParams.get("room") ?? "peer",
      control: url.searchParams.get("control") === "1",
    };
    if (srv.upgrade(request, { data })) return undefined;
    return new Response("not a WebSocket upgrade\n", { status: 400 });
  },
  websocket: {
    maxPayloadLength: 64 * 1024,
    perMessageDeflate: false,
    open(ws) {
      ws.subscribe(PUSHES);
      const skuStates = [];
      for (const s of skus.values()) skuStates.push(s.json());
      ws.send(
        JSON.stringify({
          op: "hello",
          room: ws.data.room,
          user: ws.data.user,
          server_time_ms: Date.now(),
          skus: skuStates,
        }),
      );
    },
    message(ws, message) {
      if (typeof message !== "string") {
        ws.send(badRequest("binary frames are not accepted; send JSON text"));
        return;
      }
      if (message.length > 4096) {
        ws.close(1009, "frame over 4 KiB");
        return;
      }
      ws.send(answer(ws, message));
    },
  },
});
console.error(`bun peer listening on ${server.hostname}:${server.port} (pid ${process.pid})`);
