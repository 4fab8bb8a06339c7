// Validates payloads against OpenClaw's gateway protocol JSON Schema
// (npm @openclaw/gateway-protocol, protocol.schema.json) with ajv, for
// tests/openclaw_protocol.rs. Input (stdin): [{"def": "AgentsListResult",
// "what": "agents.list", "value": {...}}, ...]. Prints one line per entry
// and exits non-zero if any does not validate.
import Ajv from "ajv";
import { readFileSync } from "node:fs";

const file = new URL("./node_modules/@openclaw/gateway-protocol/protocol.schema.json", import.meta.url);
const schema = JSON.parse(readFileSync(file, "utf8"));
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
ajv.addSchema(schema, "openclaw");
const items = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const it of items) {
  if (!schema.definitions[it.def]) { console.log(`MISSING ${it.def}`); bad++; continue; }
  const v = ajv.getSchema(`openclaw#/definitions/${it.def}`);
  if (v(it.value)) console.log(`ok ${it.what} as ${it.def}`);
  else { bad++; console.log(`BAD ${it.what} as ${it.def}: ${ajv.errorsText(v.errors, { separator: "; " })}`); }
}
process.exit(bad ? 1 : 0);
