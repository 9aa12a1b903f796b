// Drives Herald's websocket channel with Medplum's stock SubscriptionManager (@medplum/core),
// unmodified. Usage: node --experimental-websocket medplum_subscribe.mjs <herald origin> <websocket-url> <topic url>
// (node 22+ needs no flag). Prints one line per step on stdout: `connected`, then
// `event <bundle json>` for the first event-notification, and exits 0; exits 2 after 30 s.
//
// What Medplum's client needs that is not standard, and how this script meets it with the
// client's own options rather than by changing it:
// - it creates the Subscription itself (R4 shape: `criteria`, `channel.type`); the R5
//   elements Herald needs (`topic`, `channelType`) go in through `subscriptionProps`;
// - it GETs `fhir/R4/Subscription/{id}/$get-ws-binding-token` (a hard-coded path) relative to
//   its base URL; a `fetch` option maps `/fhir/R4/` to Herald's `/fhir/`;
// - it ignores the returned `websocket-url`: the URL is the constructor argument;
// - it reads the subscription id of a handshake as `reference.split('/')[1]`, which is empty
//   for R5's absolute references, so only the manager-wide emitter sees the events.
import { MedplumClient, SubscriptionManager } from '@medplum/core';

const [origin, wsUrl, topic] = process.argv.slice(2);
if (!origin || !wsUrl || !topic) {
  console.error('usage: medplum_subscribe.mjs <herald origin> <websocket-url> <topic url>');
  process.exit(64);
}
const fetchR4ToHerald = (url, init) => fetch(String(url).replace('/fhir/R4/', '/fhir/'), init);
const medplum = new MedplumClient({ baseUrl: `${origin}/`, fhirUrlPath: 'fhir', fetch: fetchR4ToHerald });
const manager = new SubscriptionManager(medplum, wsUrl, { pingIntervalMs: 1000 });
const master = manager.getMasterEmitter();
const timer = setTimeout(() => {
  console.error('timed out');
  process.exit(2);
}, 30_000);

master.addEventListener('connect', () => console.log('connected'));
master.addEventListener('error', (e) => console.error(`error: ${e.payload?.message ?? e.payload}`));
master.addEventListener('message', (e) => {
  const status = e.payload?.entry?.[0]?.resource;
  if (status?.type === 'event-notification') {
    console.log(`event ${JSON.stringify(e.payload)}`);
    clearTimeout(timer);
    manager.closeWebSocket();
    process.exit(0);
  }
});
manager.addCriteria('Task', {
  topic,
  channelType: { system: 'http://terminology.hl7.org/CodeSystem/subscription-channel-type', code: 'websocket' },
  content: 'id-only',
});
