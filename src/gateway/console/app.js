// Hearth's web console: plain JavaScript, no build step, no third-party
// code. It speaks the gateway protocol (OpenClaw v4) over the gateway's
// own WebSocket, like every other client. Nothing here is fetched from
// anywhere but the board itself.
"use strict";

const $ = (id) => document.getElementById(id);
const store = {
  get: (k) => { try { return localStorage.getItem("hearth." + k); } catch (_) { return null; } },
  set: (k, v) => { try { v == null ? localStorage.removeItem("hearth." + k) : localStorage.setItem("hearth." + k, v); } catch (_) {} },
};

function randomHex(bytes) {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a); // works on plain http too (randomUUID does not)
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, "");
    else if (v !== false && v != null) e.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k != null) e.append(k instanceof Node ? k : String(k));
  return e;
}

// ---------------------------------------------------------------- markdown
// Safe by construction: the text is HTML-escaped first, then a small subset
// of Markdown is turned into tags; links only for http(s) URLs.
function esc(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
// Code spans and links are cut out first and put back last, so no later
// rule ever runs over a tag an earlier rule made (an autolink inside a
// generated href would otherwise break out of the attribute).
function inline(s) {
  const parts = [];
  const keep = (html) => { parts.push(html); return "\u0000" + (parts.length - 1) + "\u0000"; };
  const link = (url, text) => '<a href="' + url + '" target="_blank" rel="noopener noreferrer">' + text + "</a>";
  s = s.replace(/\u0000/g, "");
  s = s.replace(/`([^`\n]+)`/g, (_, c) => keep("<code>" + c + "</code>"));
  s = s.replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s()]+)\)/g, (_, t, u) => keep(link(u, t)));
  s = s.replace(/(^|[\s(])(https?:\/\/[^\s<()\u0000]+)/g, (_, pre, u) => pre + keep(link(u, u)));
  s = s.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>");
  s = s.replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, "$1<em>$2</em>");
  s = s.replace(/(^|[^_\w])_([^_\n]+)_(?!\w)/g, "$1<em>$2</em>");
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => parts[+i]);
}
function markdown(text) {
  const lines = esc(text || "").split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const l = lines[i];
    if (/^```/.test(l)) {
      const body = [];
      for (i++; i < lines.length && !/^```/.test(lines[i]); i++) body.push(lines[i]);
      i++;
      out.push("<pre><code>" + body.join("\n") + "</code></pre>");
    } else if (/^#{1,6} /.test(l)) {
      out.push("<p><strong>" + inline(l.replace(/^#+ /, "")) + "</strong></p>");
      i++;
    } else if (/^\s*([-*+]|\d+[.)]) /.test(l)) {
      const ordered = /^\s*\d/.test(l);
      const items = [];
      for (; i < lines.length && /^\s*([-*+]|\d+[.)]) /.test(lines[i]); i++) {
        items.push("<li>" + inline(lines[i].replace(/^\s*([-*+]|\d+[.)]) /, "")) + "</li>");
      }
      out.push((ordered ? "<ol>" : "<ul>") + items.join("") + (ordered ? "</ol>" : "</ul>"));
    } else if (l.trim() === "") {
      i++;
    } else {
      const para = [];
      for (; i < lines.length && lines[i].trim() !== "" && !/^```|^#{1,6} |^\s*([-*+]|\d+[.)]) /.test(lines[i]); i++) para.push(inline(lines[i]));
      out.push("<p>" + para.join("<br>") + "</p>");
    }
  }
  return out.join("");
}

// ---------------------------------------------------------------- gateway
const gw = {
  ws: null, pending: new Map(), nextId: 1, handlers: {}, hello: null, backoff: 500, wanted: false,
  on(ev, fn) { (this.handlers[ev] = this.handlers[ev] || []).push(fn); },
  emit(ev, p) { for (const fn of this.handlers[ev] || []) { try { fn(p); } catch (e) { console.error(e); } } },
  url() { return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/"; },
  connect(auth) {
    this.wanted = true;
    this.auth = auth;
    if (this.ws) { try { this.ws.close(); } catch (_) {} }
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onmessage = (m) => this.frame(ws, m.data);
    ws.onclose = (e) => this.closed(ws, e);
  },
  frame(ws, data) {
    let f;
    try { f = JSON.parse(data); } catch (_) { return; }
    if (f.type === "event" && f.event === "connect.challenge") {
      const params = {
        minProtocol: 4, maxProtocol: 4,
        client: { id: "hearth-console", version: "1", platform: navigator.platform || "web", mode: "ui" },
        role: "operator", scopes: ["operator.admin"], auth: this.auth,
      };
      ws.send(JSON.stringify({ type: "req", id: "connect", method: "connect", params }));
    } else if (f.type === "res" && f.id === "connect") {
      if (f.ok) {
        this.hello = f.payload;
        this.backoff = 500;
        this.emit("open", f.payload);
      } else {
        this.wanted = false;
        this.emit("refused", f.error || {});
      }
    } else if (f.type === "res") {
      const p = this.pending.get(f.id);
      if (p) { this.pending.delete(f.id); f.ok ? p.resolve(f.payload) : p.reject(f.error || { message: "error" }); }
    } else if (f.type === "event") {
      this.emit(f.event, f.payload);
    }
  },
  closed(ws, e) {
    if (ws !== this.ws) return;
    for (const p of this.pending.values()) p.reject({ code: "UNAVAILABLE", message: "connection lost" });
    this.pending.clear();
    const was = !!this.hello;
    this.hello = null;
    this.emit("close", { code: e.code, reason: e.reason, was });
    if (this.wanted) {
      setTimeout(() => { if (this.wanted && this.ws === ws) this.connect(this.auth); }, this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    }
  },
  stop() { this.wanted = false; if (this.ws) this.ws.close(); },
  call(method, params) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== 1 || !this.hello) return reject({ code: "UNAVAILABLE", message: "not connected" });
      const id = "r" + this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ type: "req", id, method, params: params || {} }));
    });
  },
};

function errText(e) { return (e && (e.message || e.code)) || String(e); }

// ---------------------------------------------------------------- views
const views = ["signin", "chat", "home", "status", "memory", "setup"];
let current = "signin";
function show(name) {
  if (!gw.hello && name !== "signin") name = "signin";
  current = name;
  for (const v of views) $("view-" + v).hidden = v !== name;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === name);
  $("tabs").hidden = !gw.hello;
  if (name === "chat") chat.load();
  if (name === "home") home.load();
  if (name === "status") status.load();
  if (name === "memory") memory.load();
  if (name === "setup") setup.load();
}
window.addEventListener("hashchange", () => show(location.hash.slice(1) || "chat"));

// ---------------------------------------------------------------- sign-in
const signin = {
  start() {
    const token = store.get("token");
    const device = store.get("deviceToken");
    if (token) gw.connect({ token });
    else if (device && store.get("paired") === "1") gw.connect({ deviceToken: device });
    else show("signin");
  },
};
$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  $("signin-error").textContent = "";
  const token = $("signin-token").value.trim();
  if (!token) return;
  signin.tried = token;
  gw.connect({ token });
});
$("pair-request").addEventListener("click", () => {
  let device = store.get("deviceToken");
  if (!device) { device = randomHex(32); store.set("deviceToken", device); }
  signin.pairing = true;
  $("pair-status").textContent = "Asking the gateway…";
  gw.connect({ deviceToken: device });
});
gw.on("open", (hello) => {
  if (signin.tried) { store.set("token", signin.tried); signin.tried = null; }
  if (signin.pairing || (gw.auth && gw.auth.deviceToken)) { store.set("paired", "1"); signin.pairing = false; }
  $("conn").textContent = "online";
  $("conn").classList.add("on");
  chat.session = store.get("session") || hello.snapshot.sessionDefaults.mainSessionKey;
  const view = location.hash.slice(1);
  show(views.includes(view) && view !== "signin" ? view : "chat");
  setup.check();
});
gw.on("refused", (err) => {
  if (gw.auth && gw.auth.deviceToken && err.code === "UNAVAILABLE" && err.retryable) {
    $("pair-status").textContent = errText(err);
    clearTimeout(signin.poll);
    signin.poll = setTimeout(() => gw.connect({ deviceToken: store.get("deviceToken") }), err.retryAfterMs || 3000);
    show("signin");
    return;
  }
  if (err.code === "NOT_PAIRED" && err.details && err.details.code) {
    const code = err.details.code;
    $("pair-status").replaceChildren("Code ", el("strong", {}, code), ". On the board run ",
      el("code", {}, "hearth pairing approve " + code + " --owner"), ". Waiting for the approval…");
    $("pair-box").open = true;
    clearTimeout(signin.poll);
    signin.poll = setTimeout(() => gw.connect({ deviceToken: store.get("deviceToken") }), 3000);
    show("signin");
    return;
  }
  // forget only what the gateway said is wrong (not a busy or restarting one)
  if (gw.auth && gw.auth.token && err.code === "AUTH_TOKEN_MISMATCH") store.set("token", null);
  if (gw.auth && gw.auth.deviceToken && err.code === "NOT_PAIRED") store.set("paired", null);
  signin.tried = null;
  $("signin-error").textContent = "Refused: " + errText(err);
  show("signin");
});
gw.on("close", (c) => {
  $("conn").textContent = gw.wanted ? "reconnecting…" : "offline";
  $("conn").classList.remove("on");
});

// ---------------------------------------------------------------- chat
const chat = {
  session: null, runs: new Map(), active: null,
  async load() {
    await this.sessions();
    await this.history();
  },
  async sessions() {
    let list = [];
    try { list = (await gw.call("sessions.list", { limit: 100 })).sessions || []; } catch (_) {}
    const sel = $("session-select");
    const keys = list.map((s) => s.key);
    if (!keys.includes(this.session)) keys.unshift(this.session);
    sel.replaceChildren(...keys.map((k) => {
      const s = list.find((x) => x.key === k);
      const label = k + (s && s.channel && s.channel !== "webchat" ? " (" + s.channel + ")" : "");
      return el("option", { value: k, selected: k === this.session }, label);
    }));
  },
  async history() {
    const box = $("messages");
    let h;
    try { h = await gw.call("chat.history", { sessionKey: this.session, limit: 200 }); }
    catch (e) { box.replaceChildren(el("div", { class: "msg system" }, "History: " + errText(e))); return; }
    box.replaceChildren();
    this.runs.clear();
    for (const m of h.messages || []) this.render(m);
    if (!(h.messages || []).length) box.append(el("div", { class: "msg system empty" }, "No messages yet in " + this.session + "."));
    this.scroll();
  },
  text(m) { return (m.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n"); },
  render(m) {
    if (m.role === "tool") {
      $("messages").append(el("div", { class: "msg tool" }, "tool result" + (m.state === "error" ? " (error)" : "")));
      return;
    }
    const text = this.text(m);
    if (m.role === "assistant" && !text && m.toolCalls) {
      $("messages").append(el("div", { class: "msg tool" }, "tools: " + m.toolCalls.map((t) => t.name).join(", ")));
      return;
    }
    const b = this.bubble(m.role === "user" ? "user" : "assistant", text);
    this.note(b, m);
    if (m.runId && m.role === "assistant") this.runs.set(m.runId, b);
  },
  bubble(role, text) {
    for (const e of document.querySelectorAll("#messages .empty")) e.remove();
    const b = el("div", { class: "msg " + role });
    b.innerHTML = markdown(text);
    $("messages").append(b);
    return b;
  },
  note(b, m) {
    const bits = [];
    if (m.timestamp) bits.push(new Date(m.timestamp).toLocaleTimeString());
    if (m.local) bits.push("answered offline by the local model");
    else if (m.model && m.role === "assistant") bits.push(m.model);
    if (m.state === "aborted") bits.push("stopped");
    if (m.state === "error") bits.push("failed");
    if (bits.length) b.append(el("div", { class: "meta" + (m.local ? " local" : "") }, bits.join(" · ")));
  },
  scroll() { const box = $("messages"); box.lastElementChild && box.lastElementChild.scrollIntoView({ block: "end" }); },
  event(p) {
    if (p.sessionKey !== this.session) return;
    let b = this.runs.get(p.runId);
    const text = p.message ? this.text(p.message) : "";
    if (!b) {
      if (p.state === "error" && !text) b = this.bubble("assistant", "");
      else { b = this.bubble("assistant", text); }
      this.runs.set(p.runId, b);
    }
    if (p.state === "delta") {
      b.innerHTML = markdown(text);
      b.classList.add("streaming");
      this.busy(p.runId);
    } else {
      b.classList.remove("streaming");
      if (p.state === "error") {
        b.innerHTML = markdown(text);
        b.append(el("div", { class: "meta error" }, "Error: " + (p.errorMessage || "the run failed")));
      } else {
        b.innerHTML = markdown(text);
        this.note(b, { ...(p.message || {}), role: "assistant", state: p.state === "aborted" ? "aborted" : null, timestamp: Date.now() });
      }
      if (this.active === p.runId) this.busy(null);
    }
    this.scroll();
  },
  busy(runId) {
    this.active = runId;
    $("chat-abort").hidden = !runId;
  },
  async send(text) {
    const key = randomHex(16);
    this.bubble("user", text);
    this.scroll();
    try {
      const r = await gw.call("chat.send", { sessionKey: this.session, message: text, idempotencyKey: key });
      if (r.reset) { await this.history(); await this.sessions(); }
      else if (r.status === "started") this.busy(r.runId);
    } catch (e) {
      this.bubble("system", "Not sent: " + errText(e));
    }
  },
};
gw.on("chat", (p) => chat.event(p));
gw.on("sessions.changed", () => { if (current === "chat") chat.sessions(); });
$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = $("chat-input").value.trim();
  if (!t) return;
  $("chat-input").value = "";
  chat.send(t);
});
$("chat-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat-form").requestSubmit(); }
});
$("chat-abort").addEventListener("click", () => gw.call("chat.abort", { sessionKey: chat.session }).catch(() => {}));
$("session-select").addEventListener("change", (e) => {
  chat.session = e.target.value; store.set("session", chat.session); chat.busy(null); chat.history();
});
$("session-new").addEventListener("click", () => {
  const name = prompt("Name of the new session (letters, digits, - and _):", "chat-" + new Date().toISOString().slice(0, 10));
  if (!name) return;
  const agent = (gw.hello.snapshot.sessionDefaults.defaultAgentId) || "main";
  chat.session = "agent:" + agent + ":" + name.replace(/[^A-Za-z0-9_-]/g, "-").toLowerCase();
  store.set("session", chat.session);
  chat.load();
});
$("session-reset").addEventListener("click", async () => {
  if (!confirm("Start " + chat.session + " over? The old conversation stays on disk.")) return;
  try { await gw.call("sessions.reset", { key: chat.session }); } catch (e) { alert(errText(e)); }
  chat.history();
});

// ---------------------------------------------------------------- home
const home = {
  devices: new Map(),
  async load() {
    let r;
    try { r = await gw.call("devices.list", {}); }
    catch (e) {
      $("home-note").replaceChildren(errText(e) + " ", el("a", { href: "#setup" }, "Set up MQTT"));
      $("areas").replaceChildren();
      return;
    }
    this.devices.clear();
    for (const d of r.devices || []) this.devices.set(d.entity, d);
    $("home-note").textContent = (r.connected ? "Connected to the broker. " : "Not connected to the broker. ") + this.devices.size + " devices.";
    this.draw();
  },
  draw() {
    const areas = new Map();
    for (const d of [...this.devices.values()].sort((a, b) => (a.name || "").localeCompare(b.name || ""))) {
      const a = d.area || "Other";
      if (!areas.has(a)) areas.set(a, []);
      areas.get(a).push(d);
    }
    const names = [...areas.keys()].sort((a, b) => (a === "Other") - (b === "Other") || a.localeCompare(b));
    $("areas").replaceChildren(...names.map((a) => el("div", { class: "area" }, el("h2", {}, a), areas.get(a).map((d) => this.card(d)))));
  },
  stateText(d) {
    const bits = [d.state == null ? "unknown" : String(d.state)];
    if (d.brightness != null) bits.push("brightness " + d.brightness + "%");
    if (d.position != null) bits.push("position " + d.position + "%");
    if (d.percentage != null) bits.push("speed " + d.percentage + "%");
    if (d.current_temperature != null) bits.push(d.current_temperature + "° now");
    if (d.target_temperature != null) bits.push("set to " + d.target_temperature + "°");
    if (d.unit && d.state != null) bits[0] = d.state + " " + d.unit;
    if (d.available === false) bits.push("unavailable");
    return bits.join(" · ");
  },
  card(d) {
    const acts = d.actions || [];
    const controls = el("div", { class: "controls" });
    const act = (action, value) => this.act(d, action, value);
    if (d.high_risk) {
      controls.append(el("span", { class: "muted" }, "High-risk device: it acts only through the approval path (ask in chat)."));
    } else {
      if (acts.includes("turn_on")) {
        const on = d.state === "on" || d.state === "ON" || d.state === true;
        controls.append(el("button", { class: "switch" + (on ? " on" : ""), "aria-pressed": on ? "true" : "false",
          "data-entity": d.entity, onclick: () => act(on ? "turn_off" : "turn_on") }, on ? "On" : "Off"));
      }
      const slider = (action, val, label) => controls.append(el("input", { type: "range", min: 0, max: 100, step: 1,
        value: val == null ? 0 : val, "aria-label": label, "data-entity": d.entity, "data-action": action,
        onchange: (e) => act(action, +e.target.value) }));
      if (acts.includes("set_brightness")) slider("set_brightness", d.brightness, "brightness");
      if (acts.includes("set_percentage")) slider("set_percentage", d.percentage, "speed");
      if (acts.includes("set_position")) slider("set_position", d.position, "position");
      for (const a of ["open", "close", "stop", "press", "activate"]) {
        if (acts.includes(a) && d.component !== "lock") controls.append(el("button", { class: "plain", onclick: () => act(a) }, a));
      }
      if (acts.includes("set_temperature")) {
        const n = el("input", { type: "number", step: 0.5, value: d.target_temperature == null ? "" : d.target_temperature, "aria-label": "set-point" });
        controls.append(n, el("button", { class: "plain", onclick: () => act("set_temperature", +n.value) }, "Set °"));
      }
    }
    return el("div", { class: "device", id: "dev-" + d.entity },
      el("div", {}, el("div", { class: "name" }, d.name || d.entity), el("div", { class: "state" }, this.stateText(d))),
      el("div", { class: "muted" }, d.component), controls);
  },
  async act(d, action, value) {
    try {
      const r = await gw.call("devices.set", { entity: d.entity, action, value });
      if (r.confirmed === false) $("home-note").textContent = (d.name || d.entity) + ": sent, the device has not confirmed yet.";
    } catch (e) {
      $("home-note").textContent = (d.name || d.entity) + ": " + errText(e);
    }
  },
  event(d) {
    if (!d || !d.entity) return;
    this.devices.set(d.entity, d);
    if (current !== "home") return;
    const old = document.getElementById("dev-" + d.entity);
    if (old && (old.parentNode.querySelector("h2").textContent === (d.area || "Other"))) old.replaceWith(this.card(d));
    else this.draw();
  },
};
gw.on("device", (d) => home.event(d));

// ---------------------------------------------------------------- status
const status = {
  cursor: null, timer: null,
  async load() {
    let s;
    try { s = await gw.call("status", {}); } catch (e) { $("status-cards").textContent = errText(e); return; }
    const rows = (pairs) => el("table", {}, pairs.filter((p) => p[1] != null).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, String(v)))));
    const up = Math.floor((s.uptimeMs || 0) / 1000);
    const cards = [el("div", { class: "card" }, el("h2", {}, "Hearth " + s.version), rows([
      ["uptime", Math.floor(up / 3600) + " h " + Math.floor(up / 60) % 60 + " min"],
      ["queue", s.queue ? s.queue.running + " running, " + s.queue.pending + " waiting" : null],
      ["state dir", s.stateDir + (s.disk ? " (" + s.disk.usedHuman + " used, " + s.disk.freeHuman + " free)" : "")],
      ["memory index", s.memory && (s.memory.mode || JSON.stringify(s.memory))],
      ["local model", s.localModel && (s.localModel.available ? "loaded: " + s.localModel.model : "not available: " + (s.localModel.problem || "?"))],
      ["config", s.config],
    ]))];
    for (const p of s.providers || []) {
      cards.push(el("div", { class: "card" }, el("h2", {}, "Provider " + p.name + " (" + p.kind + ")"),
        rows((p.credentials || []).map((c) => [c.id + " " + c.key, c.state + (c.availableInMs ? " for " + Math.ceil(c.availableInMs / 1000) + " s" : "") + (c.lastError ? " — " + c.lastError : "")]))));
    }
    if (!(s.providers || []).length) cards.push(el("div", { class: "card" }, el("h2", {}, "Providers"), "None configured: replies come from the local model. ", el("a", { href: "#setup" }, "Set one up")));
    if (s.mqtt) cards.push(el("div", { class: "card" }, el("h2", {}, "MQTT"), rows([["broker", s.mqtt.url], ["connected", s.mqtt.connected], ["entities", s.mqtt.entities], ["last error", s.mqtt.lastError]])));
    const plain = (v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : v);
    for (const c of s.channels || []) {
      const st = c.status && typeof c.status === "object" ? c.status : { status: c.status };
      cards.push(el("div", { class: "card" }, el("h2", {}, "Channel " + c.kind), rows(Object.entries(st).map(([k, v]) => [k, plain(v)]))));
    }
    $("status-cards").replaceChildren(...cards);
    this.cursor = null;
    $("logs").textContent = "";
    this.tail();
  },
  async tail() {
    clearTimeout(this.timer);
    if (current !== "status" || !gw.hello) return;
    try {
      const r = await gw.call("logs.tail", this.cursor == null ? { limit: 200 } : { cursor: this.cursor, limit: 200 });
      if (r.reset) $("logs").textContent = "";
      const box = $("logs");
      const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      if (r.lines && r.lines.length) box.append(r.lines.join("\n") + "\n");
      if (atEnd) box.scrollTop = box.scrollHeight;
      this.cursor = r.cursor;
    } catch (_) {}
    this.timer = setTimeout(() => this.tail(), 2000);
  },
};

// ---------------------------------------------------------------- memory
const memory = {
  file: null,
  async load() {
    let r;
    try { r = await gw.call("agents.files.list", { agentId: this.agent() }); } catch (e) { $("memory-msg").textContent = errText(e); return; }
    const names = (r.files || []).map((f) => f.name);
    $("memory-files").replaceChildren(...names.map((n) => el("option", { value: n, selected: n === this.file }, n)));
    if (!this.file || !names.includes(this.file)) this.file = names.includes("MEMORY.md") ? "MEMORY.md" : names[0];
    if (this.file) { $("memory-files").value = this.file; this.open(this.file); }
  },
  agent() { return (gw.hello && gw.hello.snapshot.sessionDefaults.defaultAgentId) || "main"; },
  async open(name) {
    this.file = name;
    $("memory-msg").textContent = "";
    try {
      const r = await gw.call("agents.files.get", { agentId: this.agent(), name });
      $("memory-editor").value = r.file.content || "";
      if (r.file.missing) $("memory-msg").textContent = name + " does not exist yet; Save creates it.";
    } catch (e) { $("memory-msg").textContent = errText(e); }
  },
  async save() {
    try {
      await gw.call("agents.files.set", { agentId: this.agent(), name: this.file, content: $("memory-editor").value });
      $("memory-msg").textContent = "Saved " + this.file + ".";
    } catch (e) { $("memory-msg").textContent = "Not saved: " + errText(e); }
  },
  async search(q) {
    const ol = $("memory-results");
    try {
      const r = await gw.call("memory.search", { query: q, maxResults: 8 });
      ol.replaceChildren(...(r.results || []).map((x) => el("li", {}, el("div", { class: "muted" }, x.path + ":" + x.from + "-" + x.to + " (" + (+x.score).toFixed(3) + ")"), el("div", { class: "snippet" }, x.snippet))));
      if (!(r.results || []).length) ol.replaceChildren(el("li", { class: "muted" }, "Nothing found."));
    } catch (e) { ol.replaceChildren(el("li", { class: "error" }, errText(e))); }
  },
};
$("memory-files").addEventListener("change", (e) => memory.open(e.target.value));
$("memory-save").addEventListener("click", () => memory.save());
$("memory-search").addEventListener("submit", (e) => { e.preventDefault(); const q = $("memory-query").value.trim(); if (q) memory.search(q); });
$("memory-new-note").addEventListener("click", () => {
  const d = new Date();
  const name = "memory/" + d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0") + ".md";
  if (![...$("memory-files").options].some((o) => o.value === name)) $("memory-files").append(el("option", { value: name }, name));
  $("memory-files").value = name;
  memory.open(name);
});

// ---------------------------------------------------------------- setup
const setup = {
  async check() {
    try {
      const c = await gw.call("config.get", {});
      if (c.setup && c.setup.needed && !store.get("setupSeen")) { store.set("setupSeen", "1"); location.hash = "#setup"; }
    } catch (_) {}
  },
  async load() {
    let c;
    try { c = await gw.call("config.get", {}); } catch (e) { $("setup-result").textContent = errText(e); return; }
    const s = c.setup || {};
    $("setup-intro").hidden = false;
    $("setup-provider-now").textContent = s.provider ? "Now: " + s.provider : "No provider yet: replies come from the local model.";
    $("setup-telegram-now").textContent = s.telegram ? "Now: a bot token is set." : "Not set.";
    $("setup-mqtt-now").textContent = s.mqtt ? "Now: " + s.mqtt : "Not set.";
  },
  values() {
    const v = (id) => $(id).value.trim();
    const p = {};
    if (v("setup-kind") || v("setup-key") || v("setup-model") || v("setup-base")) {
      p.provider = { kind: v("setup-kind"), apiKey: v("setup-key"), model: v("setup-model"), baseUrl: v("setup-base") };
    }
    if (v("setup-telegram")) p.telegram = { botToken: v("setup-telegram") };
    if (v("setup-mqtt") || v("setup-mqtt-user") || v("setup-mqtt-pass")) p.mqtt = { url: v("setup-mqtt"), username: v("setup-mqtt-user"), password: v("setup-mqtt-pass") };
    return p;
  },
  async save() {
    $("setup-problems").replaceChildren();
    $("setup-result").textContent = "";
    const p = this.values();
    if (!Object.keys(p).length) { $("setup-result").textContent = "Nothing to save: fill in a section first."; return; }
    try {
      const r = await gw.call("config.set", p);
      for (const id of ["setup-key", "setup-telegram", "setup-mqtt-pass"]) $(id).value = "";
      $("setup-result").textContent = r.message || "Saved.";
      $("setup-restart").hidden = !r.restartRequired;
      this.load();
    } catch (e) {
      const probs = (e.details && e.details.problems) || [];
      $("setup-problems").replaceChildren(...(probs.length ? probs : [{ message: errText(e) }]).map((x) => el("li", {}, (x.key ? x.key + ": " : "") + x.message)));
    }
  },
};
$("setup-form").addEventListener("submit", (e) => { e.preventDefault(); setup.save(); });
$("setup-restart").addEventListener("click", async () => {
  try { await gw.call("gateway.restart", {}); $("setup-result").textContent = "Restarting… this page reconnects by itself."; $("setup-restart").hidden = true; }
  catch (e) { $("setup-result").textContent = errText(e); }
});

signin.start();
