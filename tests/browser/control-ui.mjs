// OpenClaw's own browser Control UI (the static files of the npm package
// `openclaw`, dist/control-ui, unchanged) in Debian's chromium against
// Hearth, for tests/openclaw_clients.rs: open it with ?gatewayUrl=...
// #token=..., accept the switch to Hearth, send a message, see the reply
// once, reload (the UI then signs in with the device token Hearth gave
// it), see the history once, send again.
// Env: CONTROL_UI (the dist/control-ui folder), UI_PORT, HEARTH_WS,
// HEARTH_TOKEN, SHOTS.
import { launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";
import { serve } from "./serve-static.mjs";

const shots = process.env.SHOTS || "/tmp/hearth-shots";
mkdirSync(shots, { recursive: true });
const server = serve(process.env.CONTROL_UI, process.env.UI_PORT);
const ws = process.env.HEARTH_WS;
const host = new URL(ws).host;
const browser = await launch();
let failed = false;
const frames = [];
const step = (s) => console.log("STEP " + s);

async function countText(page, re) {
  return page.evaluate((r) => (document.body.innerText.match(new RegExp(r, "g")) || []).length, re.source);
}
async function waitText(page, re, what, timeout = 20000) {
  try {
    await page.waitForFunction((r) => new RegExp(r).test(document.body.innerText), re.source, { timeout });
  } catch (_) {
    const t = await page.evaluate(() => document.body.innerText).catch(() => "?");
    throw new Error(`${what}: ${re} not on the page within ${timeout} ms; it shows:\n${t.slice(0, 1500)}`);
  }
}
async function send(page, text) {
  const box = page.getByPlaceholder(/Message/).first();
  await box.waitFor({ timeout: 20000 });
  await box.fill(text);
  await box.press("Enter");
}

try {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 850 } });
  const page = await ctx.newPage();
  page.on("websocket", (w) => w.on("framereceived", (f) => frames.push(String(f.payload))));

  step("open the Control UI pointed at Hearth");
  await page.goto(`http://127.0.0.1:${process.env.UI_PORT}/?gatewayUrl=${encodeURIComponent(ws)}#token=${process.env.HEARTH_TOKEN}`);
  const sw = page.getByText(`Switch to ${host}`);
  await sw.waitFor({ timeout: 20000 });
  await sw.click();
  await waitText(page, /Connected/, "connected");

  step("send and see the reply once");
  await send(page, "hello control ui");
  await waitText(page, /echo: hello control ui/, "reply");
  await page.waitForTimeout(1500);
  const replies = await countText(page, /echo: hello control ui/);
  if (replies !== 1) throw new Error(`the reply shows ${replies} times`);
  if (/Sending message/.test(await page.evaluate(() => document.body.innerText))) throw new Error("still 'Sending message…'");
  await page.screenshot({ path: `${shots}/control-ui.png` });

  step("reload: signs in with the device token, history once");
  const issued = frames.some((f) => f.includes('"deviceToken"'));
  if (!issued) throw new Error("hello-ok carried no deviceToken");
  await page.goto(`http://127.0.0.1:${process.env.UI_PORT}/`);
  await waitText(page, /echo: hello control ui/, "history after reload");
  await page.waitForTimeout(1000);
  const again = await countText(page, /echo: hello control ui/);
  if (again !== 1) throw new Error(`after the reload the reply shows ${again} times`);

  step("a second message after the reload");
  await send(page, "second message");
  await waitText(page, /echo: second message/, "second reply");
  await page.waitForTimeout(1500);
  const body = await page.evaluate(() => document.body.innerText);
  if (/Sending message/.test(body)) throw new Error("the second message sticks at 'Sending message…'");
  if ((body.match(/echo: second message/g) || []).length !== 1) throw new Error("the second reply is not shown exactly once");
  await ctx.close();
  console.log("OK");
} catch (e) {
  failed = true;
  console.log("FAIL " + (e && e.stack || e));
} finally {
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
