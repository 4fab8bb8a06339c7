// A static file server for OpenClaw's Control UI (the files of the npm
// package, `dist/control-ui`), as any web server would serve them; for
// tests/openclaw_clients.rs. Usage: node serve-static.mjs DIR PORT
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { join, normalize, extname } from "node:path";

const [dir, port] = process.argv.slice(2);
const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
  ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png",
  ".ico": "image/x-icon", ".webmanifest": "application/manifest+json", ".woff2": "font/woff2", ".wasm": "application/wasm" };
export function serve(dir, port) {
  return createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    let file = join(dir, path);
    try {
      if ((await stat(file)).isDirectory()) file = join(file, "index.html");
    } catch (_) {
      // single-page app: unknown paths get the page; a missing asset is 404
      file = extname(path) ? null : join(dir, "index.html");
    }
    if (!file) { res.writeHead(404); return res.end(); }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": types[extname(file)] || "application/octet-stream" });
      res.end(body);
    } catch (_) { res.writeHead(404); res.end(); }
  }).listen(+port, "127.0.0.1");
}
if (dir && port) serve(dir, port);
