// A real browser publisher: headless Chromium (Debian's, driven by playwright-core) joins a LiveKit room
// with LiveKit's JS SDK at its defaults (simulcast, dynacast, adaptive stream, RED audio) and publishes
// its fake camera and microphone, fed by marker clips (a y4m video and a wav, made by
// tests/conformance/publisher.py --write-clip). Optionally shares a "screen": a canvas track published
// with source screen share.
//
// usage: node publish.mjs --url WS_URL --token JWT --video CLIP.y4m --audio CLIP.wav --seconds S
//                         [--screen-share FROM:TO] [--codec vp8|vp9|av1|h264] [--chromium /usr/bin/chromium]
//                         [--schedule-from FILE]
// The share's times and --seconds count from the start, or with --schedule-from from when FILE appears (so
// a test can line up several publishers' events however late each one started).
// Prints one JSON line per event ({"event": ..., "t": ...}).

import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const required of ['url', 'token', 'video', 'audio']) {
  if (!args[required]) {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}
const seconds = Number(args.seconds ?? 20);
const start = Date.now();
let scheduleStart = start;
const log = (event, fields = {}) => console.log(JSON.stringify({ event, t: (Date.now() - start) / 1000, ...fields }));

const sdk = readFileSync(join(here, 'node_modules/livekit-client/dist/livekit-client.umd.js'));
const page = '<!doctype html><meta charset="utf-8"><title>fleet publisher</title><script src="/livekit-client.umd.js"></script>';
const server = createServer((req, res) => {
  if (req.url === '/livekit-client.umd.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' }).end(sdk);
  } else {
    res.writeHead(200, { 'content-type': 'text/html' }).end(page);
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

// playwright gives the browser a fresh profile of its own.
const browser = await chromium.launch({
  executablePath: args.chromium ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-video-capture=${args.video}`, `--use-file-for-fake-audio-capture=${args.audio}`,
    '--autoplay-policy=no-user-gesture-required',
  ],
});
let status = 0;
try {
  const tab = await browser.newPage();
  tab.on('console', (message) => {
    if (message.type() === 'error') console.error(`browser: ${message.text()}`);
  });
  await tab.goto(pageUrl);
  const joined = await tab.evaluate(async ({ url, token, codec }) => {
    const { Room, VideoPresets } = window.LivekitClient;
    // The SDK's defaults, but a small camera: a 2-core test machine encodes it live.
    // `codec`: the SDK's videoCodec (its default is VP8; with AV1 or VP9 it also sends a VP8 backup).
    const publishDefaults = codec ? { videoCodec: codec } : {};
    const room = new Room({ adaptiveStream: true, dynacast: true, publishDefaults, videoCaptureDefaults: { resolution: VideoPresets.h360.resolution } });
    window.fleetRoom = room;
    await room.connect(url, token, { autoSubscribe: false });
    await room.localParticipant.enableCameraAndMicrophone();
    const tracks = [...room.localParticipant.trackPublications.values()].map((p) => ({ sid: p.trackSid, kind: p.kind, source: p.source, mime: p.mimeType }));
    return { room: room.name, tracks };
  }, { url: args.url, token: args.token, codec: args.codec });
  log('connected', { room: joined.room });
  for (const track of joined.tracks) log('published', { kind: track.kind, sid: track.sid, source: track.source });

  // What the camera's encoder delivers, once a second: Chromium lowers frame rate and resolution when
  // the machine is short of CPU (qualityLimitationReason "cpu"), and then drops whole flashes itself.
  let running = true;
  const reportStats = async () => {
    while (running) {
      const layers = await tab.evaluate(async () => {
        const camera = [...window.fleetRoom.localParticipant.videoTrackPublications.values()].find((p) => p.source === 'camera');
        const stats = (await camera?.track?.getSenderStats?.()) ?? [];
        return stats.map((s) => ({ rid: s.rid ?? '', fps: s.framesPerSecond ?? 0, width: s.frameWidth ?? 0, limitation: s.qualityLimitationReason ?? '' }));
      }).catch(() => []);
      if (layers.length > 0) log('stats', { layers });
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  };
  const statsDone = reportStats();

  const [shareFrom, shareTo] = (args['screen-share'] ?? '').split(':').map(Number);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  if (args['schedule-from']) {
    while (!existsSync(args['schedule-from'])) await sleep(20);
    scheduleStart = Date.now();
    log('schedule_started');
  }
  const elapsed = () => (Date.now() - scheduleStart) / 1000;
  if (args['screen-share']) {
    await sleep(Math.max(0, shareFrom - elapsed()) * 1000);
    const sid = await tab.evaluate(async () => {
      const { Track } = window.LivekitClient;
      const canvas = document.createElement('canvas');
      canvas.width = 640;
      canvas.height = 360;
      const g = canvas.getContext('2d');
      let n = 0;
      window.fleetScreenTimer = setInterval(() => {
        g.fillStyle = '#20303a';
        g.fillRect(0, 0, 640, 360);
        g.fillStyle = '#e0e0e0';
        g.font = '48px sans-serif';
        g.fillText(`slide ${Math.floor(n++ / 30)}`, 40 + (n % 200), 180);
      }, 33);
      const track = canvas.captureStream(30).getVideoTracks()[0];
      const publication = await window.fleetRoom.localParticipant.publishTrack(track, { source: Track.Source.ScreenShare, simulcast: false });
      window.fleetScreen = publication;
      return publication.trackSid;
    });
    log('published', { kind: 'screen', sid });
    await sleep(Math.max(0, shareTo - elapsed()) * 1000);
    await tab.evaluate(async () => {
      await window.fleetRoom.localParticipant.unpublishTrack(window.fleetScreen.track);
      clearInterval(window.fleetScreenTimer);
    });
    log('unpublished', { kind: 'screen' });
  }
  await sleep(Math.max(0, seconds - elapsed()) * 1000);
  running = false;
  await statsDone;
  log('leaving');
  await tab.evaluate(async () => window.fleetRoom.disconnect());
  log('left');
} catch (err) {
  console.error(`publisher failed: ${err.stack ?? err}`);
  status = 1;
} finally {
  await browser.close();
  server.close();
}
process.exit(status);
