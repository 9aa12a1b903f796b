// Herald driven by fhir-kit-client (npm), a stock FHIR client used unmodified: create, read,
// vread, search, history, transaction and delete, each checked on what the client returns.
//
// usage: node fhir_kit.mjs <base-url> [--conditional] [--patch]
//   --conditional  also a conditional create (If-None-Exist), twice: one resource
//   --patch        also a JSON Patch (the client's patch(), application/json-patch+json)
// Both are off by default until Herald serves them. Prints one `ok <step>` line per step and
// `done` at the end; any failure exits non-zero with the reason on stderr.

import { Client } from 'fhir-kit-client';

const [base, ...flags] = process.argv.slice(2);
if (!base) {
  console.error('usage: node fhir_kit.mjs <base-url> [--conditional] [--patch]');
  process.exit(2);
}
const conditional = flags.includes('--conditional');
const patch = flags.includes('--patch');
const client = new Client({ baseUrl: base });

function check(cond, what, value) {
  if (!cond) {
    throw new Error(`${what}: ${JSON.stringify(value)}`);
  }
}

function ok(step) {
  console.log(`ok ${step}`);
}

const tag = `fhir-kit-${Date.now()}`;
const patient = {
  resourceType: 'Patient',
  identifier: [{ system: 'http://example.org/fhir-kit', value: tag }],
  active: true,
  name: [{ family: 'Hopper', given: ['Grace'] }],
};

try {
  const cs = await client.capabilityStatement();
  check(cs.resourceType === 'CapabilityStatement' && cs.format.includes('application/fhir+json'), 'capability statement', cs.format);
  ok('metadata');

  const created = await client.create({ resourceType: 'Patient', body: patient });
  check(created.resourceType === 'Patient' && created.id && created.meta?.versionId === '1', 'create', created);
  ok('create');

  const read = await client.read({ resourceType: 'Patient', id: created.id });
  check(read.id === created.id && read.name[0].family === 'Hopper', 'read', read);
  ok('read');

  const updated = await client.update({ resourceType: 'Patient', id: created.id, body: { ...read, active: false } });
  check(updated.meta.versionId === '2' && updated.active === false, 'update', updated);
  ok('update');

  const v1 = await client.vread({ resourceType: 'Patient', id: created.id, version: '1' });
  check(v1.active === true, 'vread', v1);
  ok('vread');

  const found = await client.search({ resourceType: 'Patient', searchParams: { identifier: `http://example.org/fhir-kit|${tag}` } });
  check(found.type === 'searchset' && found.entry?.length === 1 && found.entry[0].resource.id === created.id, 'search', found);
  ok('search');

  const history = await client.history({ resourceType: 'Patient', id: created.id });
  check(history.type === 'history' && history.entry.length === 2, 'history', history);
  ok('history');

  const tx = await client.transaction({
    body: {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:6b1e5a0c-7d43-4b8e-9f3c-2a1d9c0e4f11', request: { method: 'POST', url: 'Patient' }, resource: { ...patient, identifier: [{ system: 'http://example.org/fhir-kit', value: `${tag}-tx` }] } },
        {
          request: { method: 'POST', url: 'Observation' },
          resource: {
            resourceType: 'Observation',
            status: 'final',
            code: { text: 'heart rate' },
            subject: { reference: 'urn:uuid:6b1e5a0c-7d43-4b8e-9f3c-2a1d9c0e4f11' },
          },
        },
      ],
    },
  });
  check(tx.type === 'transaction-response' && tx.entry.length === 2, 'transaction', tx);
  const obs = tx.entry[1].resource;
  check(obs.subject.reference === `Patient/${tx.entry[0].resource.id}`, 'transaction reference', obs);
  ok('transaction');

  if (conditional) {
    const query = `identifier=http://example.org/fhir-kit|${tag}-cond`;
    const body = { ...patient, identifier: [{ system: 'http://example.org/fhir-kit', value: `${tag}-cond` }] };
    const first = await client.create({ resourceType: 'Patient', body, options: { headers: { 'If-None-Exist': query } } });
    await client.create({ resourceType: 'Patient', body, options: { headers: { 'If-None-Exist': query } } });
    const both = await client.search({ resourceType: 'Patient', searchParams: { identifier: `http://example.org/fhir-kit|${tag}-cond` } });
    check(both.entry?.length === 1 && both.entry[0].resource.id === first.id, 'conditional create', both);
    ok('conditional-create');
  }

  if (patch) {
    const patched = await client.patch({
      resourceType: 'Patient',
      id: created.id,
      jsonPatch: [{ op: 'replace', path: '/active', value: true }],
    });
    check(patched.active === true && patched.meta.versionId === '3', 'patch', patched);
    ok('patch');
  }

  await client.delete({ resourceType: 'Patient', id: created.id });
  let gone = false;
  try {
    await client.read({ resourceType: 'Patient', id: created.id });
  } catch (e) {
    gone = e.response?.status === 410 || e.response?.status === 404;
  }
  check(gone, 'delete: a read afterwards is 410 or 404', created.id);
  ok('delete');

  console.log('done');
} catch (e) {
  console.error(`fhir-kit-client step failed: ${e.message} ${e.response ? JSON.stringify(e.response.data) : ''}`);
  process.exit(1);
}
