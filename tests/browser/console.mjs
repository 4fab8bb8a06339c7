// Drives Hearth's web console in Debian's chromium (headless, through
// playwright-core over the DevTools protocol) for tests/console.rs.
// Env: HEARTH_URL (http://127.0.0.1:PORT/), HEARTH_TOKEN, SHOTS (a folder
// for screenshots). Prints one line per step; exits non-zero on the first
// failure with what was expected and what the page showed.
import { launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";

const url = process.env.HEARTH_URL;
const token = process.env.HEARTH_TOKEN;
const shots = process.env.SHOTS || "/tmp/hearth-shots";
mkdirSync(shots, { recursive: true });

const browser = await launch();
const phone = { viewport: { width: 360, height: 740 }, deviceScaleFactor: 2 };
let failed = false;

function step(name) { console.log("STEP " + name); }
async function shot(page, name) { await page.screenshot({ path: `${shots}/${name}.png`, fullPage: false }); }
async function expectText(page, sel, re, what, timeout = 15000) {
  try {
    await page.waitForFunction(([s, r]) => {
      const els = [...document.querySelectorAll(s)];
      return els.some((e) => new RegExp(r).test(e.textContent));
    }, [sel, re.source], { timeout });
  } catch (e) {
    const got = await page.$$eval(sel, (els) => els.map((e) => e.textContent).join(" | ")).catch(() => "?");
    throw new Error(`${what}: expected ${sel} to match ${re} within ${timeout} ms; the page shows: ${got.slice(0, 800)}`);
  }
}

try {
  const ctx = await browser.newContext(phone);
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  step("a wrong token is refused");
  await page.goto(url);
  await page.fill("#signin-token", "not-the-token-at-all");
  await page.click("#signin-form button[type=submit]");
  await expectText(page, "#signin-error", /Refused: gateway token mismatch/, "wrong token");
  await shot(page, "signin");

  step("sign in with the token");
  await page.fill("#signin-token", token);
  await page.click("#signin-form button[type=submit]");
  await page.waitForSelector("#view-chat:not([hidden])", { timeout: 15000 });
  await expectText(page, "#conn", /online/, "connection pill");

  step("chat: a streamed reply");
  await page.fill("#chat-input", "hello console [slow:120]");
  await page.click("#chat-send");
  await page.waitForSelector(".msg.assistant.streaming", { timeout: 15000 });
  const partial = await page.textContent(".msg.assistant.streaming");
  if (!/part/.test(partial)) throw new Error("streaming bubble without partial text: " + partial);
  await expectText(page, ".msg.assistant:not(.streaming)", /done: hello console/, "final reply");
  console.log("STREAMED " + JSON.stringify(partial));

  step("chat: markdown is rendered, HTML is not");
  await page.fill("#chat-input", "**bold** and `code` <img src=x onerror=alert(1)>");
  await page.click("#chat-send");
  await expectText(page, ".msg.assistant", /echo: bold and code/, "markdown reply");
  const strong = await page.$$eval(".msg.assistant strong", (els) => els.map((e) => e.textContent));
  if (!strong.includes("bold")) throw new Error("no <strong> in the reply: " + strong);
  if (await page.$(".msg img")) throw new Error("an <img> from the message text was rendered");
  await shot(page, "chat");

  step("chat: history after a reload");
  await page.reload();
  await page.waitForSelector("#view-chat:not([hidden])", { timeout: 15000 });
  await expectText(page, ".msg.assistant", /done: hello console/, "history after reload");
  const users = await page.$$eval(".msg.user", (els) => els.map((e) => e.textContent));
  if (users.filter((t) => /hello console/.test(t)).length !== 1) throw new Error("user message not exactly once: " + users);

  step("chat: a slash command");
  await page.fill("#chat-input", "/help");
  await page.click("#chat-send");
  await expectText(page, ".msg.assistant", /\/new or \/reset/, "help text");

  step("chat: stop a reply being written");
  await page.fill("#chat-input", "a long one [slow:400]");
  await page.click("#chat-send");
  await page.waitForSelector("#chat-abort:not([hidden])", { timeout: 10000 });
  await page.waitForSelector(".msg.assistant.streaming", { timeout: 10000 });
  await page.click("#chat-abort");
  await expectText(page, ".msg.assistant .meta", /stopped/, "aborted reply marked");
  if (!(await page.isHidden("#chat-abort"))) throw new Error("Stop still shown after the abort");

  step("sessions: a new one, then back");
  page.once("dialog", (d) => d.accept("kitchen-notes"));
  await page.click("#session-new");
  await expectText(page, "#messages", /No messages yet in agent:main:kitchen-notes/, "new session empty");
  await page.fill("#chat-input", "note one");
  await page.click("#chat-send");
  await expectText(page, ".msg.assistant", /echo: note one/, "reply in the new session");
  await page.selectOption("#session-select", "agent:main:main");
  await expectText(page, ".msg.assistant", /done: hello console/, "main session again");
  if (await page.$$eval(".msg", (els) => els.some((e) => /note one/.test(e.textContent)))) throw new Error("the other session's message shows in main");

  step("home: live state and a toggle");
  await page.goto(url + "#home");
  await expectText(page, ".device .name", /Kitchen Light/, "kitchen light listed");
  await expectText(page, ".area h2", /Kitchen/, "area heading");
  const btn = ".switch[data-entity='light.kitchen']";
  await page.waitForSelector(btn, { timeout: 10000 });
  const before = await page.textContent(btn);
  await page.click(btn);
  const want = before.trim() === "On" ? "Off" : "On";
  await page.waitForFunction(([s, w]) => document.querySelector(s) && document.querySelector(s).textContent === w, [btn, want], { timeout: 15000 });
  console.log("TOGGLED " + before + " -> " + want);
  const risky = await page.$$eval(".device", (els) => els.filter((e) => /approval path/.test(e.textContent)).map((e) => e.querySelector(".name").textContent));
  if (!risky.length) throw new Error("no high-risk device shown as approval-only");
  await shot(page, "home");

  step("status: providers masked, log tail");
  await page.goto(url + "#status");
  await expectText(page, ".card h2", /Provider fake/, "provider card");
  await expectText(page, "#logs", /listening|started|gateway/, "log lines");
  const body = await page.textContent("body");
  if (body.includes("sk-test-secret-key")) throw new Error("the provider key is shown in full");
  if (body.includes(token)) throw new Error("the gateway token is shown");
  await shot(page, "status");

  step("memory: edit MEMORY.md and search");
  await page.goto(url + "#memory");
  await page.waitForFunction(() => document.querySelector("#memory-files") && document.querySelector("#memory-files").value === "MEMORY.md", null, { timeout: 10000 });
  await page.fill("#memory-editor", "# Memory\n\nThe household has a small dog named Pepper.\n");
  await page.click("#memory-save");
  await expectText(page, "#memory-msg", /Saved MEMORY.md/, "memory saved");
  await page.fill("#memory-query", "dog Pepper");
  await page.click("#memory-search button");
  await expectText(page, "#memory-results", /Pepper/, "search finds the saved line");
  await shot(page, "memory");

  step("setup: bad values, every problem at once, then good ones");
  await page.goto(url + "#setup");
  await page.selectOption("#setup-kind", "openai");
  await page.fill("#setup-key", "two words");
  await page.fill("#setup-mqtt-user", "home");
  await page.click("#setup-form button[type=submit]");
  await page.waitForFunction(() => document.querySelectorAll("#setup-problems li").length >= 2, null, { timeout: 10000 });
  const probs = await page.$$eval("#setup-problems li", (els) => els.map((e) => e.textContent));
  console.log("PROBLEMS " + JSON.stringify(probs));
  await shot(page, "setup-problems");
  await page.selectOption("#setup-kind", "anthropic");
  await page.fill("#setup-key", "sk-ant-console-test-0123456789");
  await page.fill("#setup-model", "");
  await page.fill("#setup-mqtt-user", "");
  await page.fill("#setup-telegram", "123456:ABCdefGHIjklMNOpqrSTUvwxYZ_-12345");
  await page.click("#setup-form button[type=submit]");
  await expectText(page, "#setup-result, #setup-problems", /Saved|:/, "setup answered");
  const after = await page.textContent("#setup-problems");
  if (after.trim()) throw new Error("good values refused: " + after);
  await expectText(page, "#setup-result", /Saved/, "setup saved");
  if (await page.inputValue("#setup-key")) throw new Error("the key field was not cleared");
  await shot(page, "setup");

  step("a second browser pairs through the owner");
  const other = await browser.newContext(phone);
  const p2 = await other.newPage();
  await p2.goto(url);
  await p2.click("#pair-box summary");
  await p2.click("#pair-request");
  await expectText(p2, "#pair-status", /Code [A-Z0-9]{8}/, "pairing code");
  const code = (await p2.textContent("#pair-status strong")).trim();
  await shot(p2, "pairing");
  const r = await page.evaluate((c) => gw.call("pairing.approve", { code: c, trust: "owner" }), code);
  if (!r.ok) throw new Error("approve failed: " + JSON.stringify(r));
  await p2.waitForSelector("#view-chat:not([hidden])", { timeout: 15000 });
  console.log("PAIRED " + code);
  await other.close();

  const bad = errors.filter((e) => !/WebSocket|ERR_|favicon|net::/.test(e));
  if (bad.length) throw new Error("page errors: " + bad.join("; "));
  await ctx.close();
  console.log("OK");
} catch (e) {
  failed = true;
  console.log("FAIL " + (e && e.stack || e));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
