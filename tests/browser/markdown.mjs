// The console's Markdown renderer on hostile text, for tests/console.rs:
// loads markdown() out of src/gateway/console/app.js and checks that no
// input yields a tag the renderer did not mean (an attribute other than
// href/target/rel, a javascript: link, a raw < from the text).
import { readFileSync } from "node:fs";

const src = readFileSync(new URL("../../src/gateway/console/app.js", import.meta.url), "utf8");
const code = src.slice(src.indexOf("function esc("), src.indexOf("// ---------------------------------------------------------------- gateway"));
const { markdown } = await import("data:text/javascript," + encodeURIComponent(code + "\nexport { markdown };"));
const hostile = [
  "[a](https://x.com/(https://q/onmouseover=location='javascript:alert(1)'//)",
  "https://a.b/\"onmouseover=alert(1) x",
  "[x](javascript:alert(1))",
  "<img src=x onerror=alert(1)>",
  "[`code`](https://a.b/) **[b](https://c.d/_e_)** _https://f.g/h_",
  "\u0000 0\u0000 [t](https://a.b/\u00000\u0000)",
  "``` \n<script>alert(1)</script>\n```",
  "* [l](https://a.b/\"><svg onload=alert(1)>)",
];
let bad = 0;
for (const h of hostile) {
  const out = markdown(h);
  const tags = out.match(/<[^>]*>/g) || [];
  for (const t of tags) {
    const ok = /^<\/?(p|br|strong|em|code|pre|ul|ol|li)>$/.test(t) ||
      /^<a href="https?:\/\/[^"<>]*" target="_blank" rel="noopener noreferrer">$/.test(t) || t === "</a>";
    if (!ok) { bad++; console.log("BAD", JSON.stringify(h), "->", t); }
  }
}
const good = markdown("**bold** `code` [link](https://example.com/x) https://a.b/c");
for (const want of ["<strong>bold</strong>", "<code>code</code>", '<a href="https://example.com/x"', '<a href="https://a.b/c"']) {
  if (!good.includes(want)) { bad++; console.log("MISSING", want, "in", good); }
}
console.log(bad ? "FAIL" : "OK");
process.exit(bad ? 1 : 0);
