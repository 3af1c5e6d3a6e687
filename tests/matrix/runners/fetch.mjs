// Download an npm package with node's built-in fetch, the way a script would.
//
//   node fetch.mjs PACKUMENT_URL OUT
//
// CREDHOP_FETCH_PROXY set: every request goes through an undici ProxyAgent (node 20's fetch ignores
// the proxy variables), undici taken from the directory CREDHOP_UNDICI. TLS trust: NODE_EXTRA_CA_CERTS.
// A failing fetch is left unhandled, so node prints it as it would for the user.
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const [packumentUrl, out] = process.argv.slice(2);
const options = {};
if (process.env.CREDHOP_FETCH_PROXY) {
  const require = createRequire(process.env.CREDHOP_UNDICI + "/");
  const { ProxyAgent } = require("undici");
  options.dispatcher = new ProxyAgent(process.env.CREDHOP_FETCH_PROXY);
}

async function get(url) {
  const response = await fetch(url, options);
  if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText} from ${url}`);
  return response;
}

const packument = await (await get(packumentUrl)).json();
const tarballUrl = packument.versions[packument["dist-tags"].latest].dist.tarball;
const data = Buffer.from(await (await get(tarballUrl)).arrayBuffer());
writeFileSync(out, data);
console.log(`downloaded ${tarballUrl.split("/").pop()} (${data.length} bytes)`);
