// Measures the operator surfaces at scale (issue #10's figures; not a test): creates N websocket
// subscriptions on a running Herald (no receiver or handshake needed), then times /metrics,
// /admin/api/summary and the dashboard's first full render in headless Chromium.
//
// Usage: node admin_scale.mjs <origin> [N=10000]
import { chromium } from "playwright-core";

const origin = process.argv[2];
const n = Number(process.argv[3] || 10000);
const fhir = origin + "/fhir";
const topic = "http://example.org/topics/admin-scale";

async function post(path, body) {
  const r = await fetch(fhir + path, { method: "POST", headers: { "content-type": "application/fhir+json" }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(path + " " + r.status + " " + await r.text());
  return r.json();
}

await post("/SubscriptionTopic", { resourceType: "SubscriptionTopic", url: topic, status: "active",
  resourceTrigger: [{ resource: "Task" }], canFilterBy: [{ resource: "Task", filterParameter: "owner" }] });
let made = 0;
const started = Date.now();
async function worker() {
  while (made < n) {
    const i = made++;
    await post("/Subscription", { resourceType: "Subscription", status: "requested", topic, content: "id-only",
      channelType: { system: "http://terminology.hl7.org/CodeSystem/subscription-channel-type", code: "websocket" },
      filterBy: [{ filterParameter: "owner", value: `Organization/org-${i}` }] });
  }
}
await Promise.all(Array.from({ length: 32 }, worker));
console.log(JSON.stringify({ step: "created", subscriptions: n, seconds: (Date.now() - started) / 1000 }));

async function timed(path, runs = 5) {
  const times = []; let bytes = 0;
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const r = await fetch(origin + path);
    const text = await r.text();
    times.push(performance.now() - t); bytes = text.length;
  }
  times.sort((a, b) => a - b);
  return { path, bytes, median_ms: Number(times[Math.floor(runs / 2)].toFixed(1)), min_ms: Number(times[0].toFixed(1)) };
}
console.log(JSON.stringify({ step: "metrics", ...(await timed("/metrics")) }));
console.log(JSON.stringify({ step: "summary", ...(await timed("/admin/api/summary")) }));

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const loads = [];
for (let i = 0; i < 3; i++) {
  const page = await browser.newPage();
  const t = Date.now();
  await page.goto(origin + "/admin/");
  await page.locator("tr.sub").nth(199).waitFor({ timeout: 60000 });
  loads.push(Date.now() - t);
  await page.close();
}
await browser.close();
loads.sort((a, b) => a - b);
console.log(JSON.stringify({ step: "dashboard", subscriptions: n, first_render_ms: loads, median_ms: loads[1] }));
