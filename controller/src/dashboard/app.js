// The fleet's dashboard: nodes and recordings from the controller's API, refreshed every 2 s, with a
// form to start a recording and a button to stop one. The API key stays in this tab's session storage
// and goes out only in the Authorization header of the API's own requests. Every value from the API is
// written as text, never as markup.
'use strict';

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem('fleet-api-key');

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${apiKey}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${answer.error?.message ?? response.statusText}`);
  return answer;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text ?? '';
  if (className) td.className = className;
  return td;
}

// A button that asks the API for a short-lived link to one of the recording's files (the MP4 or its
// poster) and opens it in a new tab, where the browser plays or shows it; `download` saves it instead.
function mediaButton(td, id, file, text, download) {
  const button = document.createElement('button');
  button.textContent = text;
  button.className = `media ${file}${download ? ' download' : ''}`;
  button.onclick = async () => {
    try {
      const link = await api('GET', `/v1/recordings/${encodeURIComponent(id)}/media/${file}`);
      const a = document.createElement('a');
      a.href = link.url;
      a.target = '_blank';
      a.rel = 'noopener';
      if (download) a.download = `${id}.mp4`;
      a.click();
    } catch (err) {
      status(err.message, true);
    }
  };
  td.append(button, ' ');
}

function mb(bytes) {
  return bytes ? `${(bytes / 1e6).toFixed(1)} MB` : '0';
}

function showNodes(nodes) {
  const body = $('nodes').tBodies[0];
  body.replaceChildren();
  for (const node of nodes) {
    const row = body.insertRow();
    row.dataset.node = node.id;
    cell(row, node.id);
    cell(row, node.role);
    cell(row, node.mode + (node.draining ? ' (draining)' : ''));
    cell(row, `${node.running_jobs.length} / ${node.slots}`);
    cell(row, `${Math.round(node.cpu_load * 100)} %`);
    cell(row, node.role === 'recorder' ? mb(node.spool_bytes) : '');
    cell(row, (node.encoders ?? []).join(', '));
  }
}

function showRecordings(recordings) {
  const body = $('recordings').tBodies[0];
  body.replaceChildren();
  for (const record of recordings) {
    const row = body.insertRow();
    row.dataset.id = record.id;
    cell(row, record.id);
    cell(row, record.request.room);
    cell(row, record.state, `state ${record.state}`);
    const progress = cell(row, '');
    if (record.state === 'transcoding' && record.progress) {
      const bar = document.createElement('progress');
      bar.max = 100;
      bar.value = record.progress.percent;
      progress.append(bar, ` ${Math.round(record.progress.percent)} %`);
    }
    cell(row, String(record.sessions?.length ?? 0));
    cell(row, (record.warnings ?? []).join('; '), 'warnings');
    const output = cell(row, '', 'output');
    if (record.output) {
      mediaButton(output, record.id, 'mp4', 'Play', false);
      mediaButton(output, record.id, 'mp4', 'Download', true);
      if (record.output.poster) mediaButton(output, record.id, 'poster', 'Poster', false);
      output.title = record.output.location;
    }
    const actions = cell(row, '');
    if (['queued', 'starting', 'recording'].includes(record.state)) {
      const stop = document.createElement('button');
      stop.textContent = 'Stop';
      stop.className = 'stop';
      stop.onclick = () => act(() => api('POST', `/v1/recordings/${encodeURIComponent(record.id)}/stop`));
      actions.append(stop);
    }
  }
}

function status(text, error) {
  $('status').textContent = text;
  $('status').className = error ? 'error' : '';
}

async function refresh() {
  try {
    const [nodes, page] = await Promise.all([api('GET', '/v1/nodes'), api('GET', '/v1/recordings?limit=50')]);
    showNodes(nodes.nodes);
    showRecordings(page.recordings);
    $('main').hidden = false;
    status(`Connected; updated ${new Date().toLocaleTimeString()}.`);
  } catch (err) {
    status(`Not connected: ${err.message}`, true);
  }
}

async function act(action) {
  try {
    await action();
  } catch (err) {
    status(err.message, true);
  }
  await refresh();
}

$('key-form').onsubmit = (event) => {
  event.preventDefault();
  apiKey = $('api-key').value;
  sessionStorage.setItem('fleet-api-key', apiKey);
  refresh();
};

$('start-form').onsubmit = (event) => {
  event.preventDefault();
  const request = { room: $('room').value };
  if ($('test-source').checked) request.source = { type: 'test', participants: 2 };
  act(() => api('POST', '/v1/recordings', request));
};

if (apiKey) refresh();
setInterval(() => apiKey && refresh(), 2000);
