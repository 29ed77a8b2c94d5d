"""A real LiveKit publisher: LiveKit's Python SDK (libwebrtc inside) publishing a camera-like video track
and a microphone track with A/V sync markers.

Markers follow the fleet's sync convention: once a second, the picture flashes white and the audio
carries a 100 ms tone of 440 + 110 * index Hz, at the same instant (at 0.3 * index s past each second of
the wall clock, or --phase). Between
markers the picture is camera-like (a tinted texture that moves, with sensor noise) so encoders spend
real bits, and the audio is faint noise.

End-to-end encryption (LiveKit's frame encryption, as the SDK does it): --e2ee-key TEXT (the room's shared
key, index 0), --e2ee-own-key TEXT (this participant's own key instead), --e2ee-key-change S:TEXT (at S
seconds, key index 1 becomes TEXT and is used from then on).

Events are given as seconds from the start of publishing: --mute-camera FROM:TO, --leave-at S,
--screen-share FROM:TO (a second video track, source screen share), --resize-at S:WxH (the camera
continues at a new size). With --schedule-from FILE they (and --seconds) count from when FILE appears
instead, so a test can line up several publishers' events however late each one started. Prints one JSON line per event on stdout ({"event": ..., "t": ...}).
"""

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np
from livekit import api, rtc

RATE = 48_000
MARKER_S = 0.1
# Five frames of flash at 30 fps: encoders of a busy 2-core machine drop frames, and a three-frame flash was
# sometimes lost whole. (The checker takes a white run under seven frames for a flash, and its first frame
# for the marker's instant.)
FLASH_S = 5 / 30
# Tints (U, V offsets) per participant index, so tiles can be told apart.
TINTS = [(-20, 40), (-30, -30), (40, -20), (-40, 20), (30, 30), (10, -40), (-10, 25), (25, 10), (0, -25)]


def log(event, **fields):
    wall_ms = int(time.time() * 1000)
    print(json.dumps({"event": event, "t": round(time.monotonic() - START, 3), "wall_ms": wall_ms, **fields}), flush=True)


class Camera:
    """I420 frames: a smooth random texture scrolling with the participant's tint, plus noise."""

    def __init__(self, index, width, height, seed):
        self.index = index
        self.rng = np.random.default_rng(seed)
        self.resize(width, height)

    def resize(self, width, height):
        self.width, self.height = width, height
        coarse = self.rng.integers(40, 170, size=(height // 8 + 2, width // 4 + 2), dtype=np.int16)
        texture = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[: height + 8, : 2 * width]
        self.texture = texture
        self.noise = [self.rng.integers(-5, 6, size=(height, width), dtype=np.int16) for _ in range(7)]
        du, dv = TINTS[self.index % len(TINTS)]
        self.u = np.full((height // 2, width // 2), 128 + du, dtype=np.uint8)
        self.v = np.full((height // 2, width // 2), 128 + dv, dtype=np.uint8)

    def frame(self, n, flash):
        w, h = self.width, self.height
        if flash:
            y = np.full((h, w), 235, dtype=np.uint8)
            u = v = np.full((h // 2, w // 2), 128, dtype=np.uint8)
        else:
            x = (n * 3) % w
            dy = int(4 * np.sin(n / 15.0)) + 4
            y = np.clip(self.texture[dy : dy + h, x : x + w] + self.noise[n % len(self.noise)], 16, 200).astype(np.uint8)
            u, v = self.u, self.v
        data = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).tobytes()
        return rtc.VideoFrame(w, h, rtc.VideoBufferType.I420, data)


def span(text):
    a, b = text.split(":")
    return float(a), float(b)


def write_clip(directory, index, width, height, fps, seconds):
    """The marker clip of a browser's fake devices: `camera.y4m` and `microphone.wav` (48 kHz mono), both
    `seconds` long so that Chromium, looping each, keeps them in step. Markers at 0.3 * index + 0.15 s."""
    import os
    import wave

    os.makedirs(directory, exist_ok=True)
    # Not on the loop point: Chromium may drop the frames where its file reader wraps around.
    phase = (0.3 * index + 0.15) % 1.0
    camera = Camera(index, width, height, seed=index)
    frames = int(seconds * fps)
    flash_s = FLASH_S
    with open(os.path.join(directory, "camera.y4m"), "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for n in range(frames):
            frame = camera.frame(n, ((n / fps + 0.5 / fps - phase) % 1.0) < flash_s)
            out.write(b"FRAME\n")
            out.write(bytes(frame.data))
    rng = np.random.default_rng(100 + index)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 440.0 + 110.0 * (index % 9)
    samples = rng.normal(0, 30, t.size) + (((t - phase) % 1.0) < MARKER_S) * 9000 * np.sin(2 * np.pi * tone * t)
    with wave.open(os.path.join(directory, "microphone.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.clip(samples, -32767, 32767).astype(np.int16).tobytes())


async def main():
    if "--write-clip" in sys.argv:
        clip = argparse.ArgumentParser()
        clip.add_argument("--write-clip", required=True, help="directory for camera.y4m and microphone.wav")
        clip.add_argument("--index", type=int, default=0)
        clip.add_argument("--width", type=int, default=640)
        clip.add_argument("--height", type=int, default=360)
        clip.add_argument("--fps", type=int, default=30)
        clip.add_argument("--seconds", type=int, default=5)
        a = clip.parse_args()
        write_clip(a.write_clip, a.index, a.width, a.height, a.fps, a.seconds)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--index", type=int, default=0, help="colour and tone of the markers")
    parser.add_argument("--codec", default="vp8", choices=["vp8", "h264", "vp9", "av1"])
    parser.add_argument("--simulcast", action="store_true")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=1_200_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--leave-at", type=float)
    parser.add_argument("--mute-camera", type=span)
    parser.add_argument("--screen-share", type=span)
    parser.add_argument("--resize-at")
    parser.add_argument("--schedule-from", help="events count from when this file appears (default: the start)")
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument("--phase", type=float, help="markers at this fraction of each second (default: 0.3 * index)")
    parser.add_argument("--audio-queue-ms", type=int, default=40)
    parser.add_argument("--e2ee-key")
    parser.add_argument("--e2ee-own-key")
    parser.add_argument("--e2ee-key-change")
    args = parser.parse_args()

    token = (
        api.AccessToken(args.api_key, args.api_secret)
        .with_identity(args.identity)
        .with_name(args.identity.capitalize())
        .with_grants(api.VideoGrants(room_join=True, room=args.room, can_subscribe=False))
        .to_jwt()
    )
    room = rtc.Room()
    encryption = None
    if args.e2ee_key or args.e2ee_own_key:
        shared = args.e2ee_key.encode() if args.e2ee_key else None
        encryption = rtc.E2EEOptions(key_provider_options=rtc.KeyProviderOptions(shared_key=shared))
    # The server announces the participant while connect() runs (its join precedes the media path):
    # both ends are logged.
    log("connecting", room=args.room)
    await room.connect(args.url, token, rtc.RoomOptions(auto_subscribe=False, encryption=encryption))
    if args.e2ee_own_key:
        room.e2ee_manager.key_provider.set_key(args.identity, args.e2ee_own_key.encode(), 0)
    log("connected", room=args.room, e2ee=encryption is not None)
    key_change = None
    if args.e2ee_key_change:
        at, text = args.e2ee_key_change.split(":", 1)
        key_change = (float(at), text.encode())

    codecs = {"vp8": rtc.VideoCodec.VP8, "h264": rtc.VideoCodec.H264, "vp9": rtc.VideoCodec.VP9, "av1": rtc.VideoCodec.AV1}
    camera = Camera(args.index, args.width, args.height, seed=args.index)
    video_source = rtc.VideoSource(args.width, args.height)
    video_track = rtc.LocalVideoTrack.create_video_track("camera", video_source)
    video_options = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA,
        simulcast=args.simulcast,
        video_codec=codecs[args.codec],
        video_encoding=rtc.VideoEncoding(max_bitrate=args.bitrate, max_framerate=args.fps),
        # A busy 2-core test machine should cost resolution, not frames: dropped frames move the flashes.
        degradation_preference=rtc.DegradationPreference.MAINTAIN_FRAMERATE,
    )
    video_pub = await room.local_participant.publish_track(video_track, video_options)
    log("published", kind="video", sid=video_pub.sid, codec=args.codec)

    audio_source = None
    if not args.no_audio:
        audio_source = rtc.AudioSource(RATE, 1, queue_size_ms=args.audio_queue_ms)
        audio_track = rtc.LocalAudioTrack.create_audio_track("microphone", audio_source)
        audio_pub = await room.local_participant.publish_track(audio_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        log("published", kind="audio", sid=audio_pub.sid)

    screen = None
    resize = None
    if args.resize_at:
        at, size = args.resize_at.split(":")
        w, h = size.split("x")
        resize = (float(at), int(w), int(h))

    tone = 440.0 + 110.0 * (args.index % 9)
    # Markers sit at a fixed phase of the wall clock's seconds, apart per participant (0.3 s), so a
    # checker pairing each flash with the beep near it never meets another participant's marker.
    phase = args.phase if args.phase is not None else (0.3 * args.index) % 1.0
    phase = (phase - time.time()) % 1.0
    rng = np.random.default_rng(100 + args.index)
    end = min(args.seconds, args.leave_at) if args.leave_at is not None else args.seconds
    # Markers count from the first media instant; video and audio share this clock. Each runs in its
    # own task, so an audio frame waiting for its queue never delays a video frame's capture time.
    t0 = time.monotonic()
    video_n = 0
    # Events and the end count from `schedule_start` on the media clock: its start, or the moment the
    # --schedule-from file appeared (never, until then).
    schedule_start = 0.0 if args.schedule_from is None else float("inf")

    async def sleep_until(t):
        await asyncio.sleep(max(0.0, t - (time.monotonic() - t0)))

    async def send_audio():
        # 10 ms frames: a tone burst inside markers, faint noise elsewhere.
        k = 0
        while k / RATE < schedule_start + end:
            await sleep_until(k / RATE)
            t = (k + np.arange(480)) / RATE
            samples = rng.normal(0, 30, 480)
            beep = ((t - phase) % 1.0) < MARKER_S
            samples = samples + beep * 9000 * np.sin(2 * np.pi * tone * t)
            frame = rtc.AudioFrame(np.clip(samples, -32767, 32767).astype(np.int16).tobytes(), RATE, 1, 480)
            await audio_source.capture_frame(frame)
            k += 480

    audio_task = asyncio.ensure_future(send_audio()) if audio_source is not None else None
    muted = False
    while video_n / args.fps < schedule_start + end:
        await sleep_until(video_n / args.fps)
        if schedule_start == float("inf") and os.path.exists(args.schedule_from):
            schedule_start = time.monotonic() - t0
            log("schedule_started")
        now = time.monotonic() - t0 - schedule_start
        if key_change and now >= key_change[0]:
            provider = room.e2ee_manager.key_provider
            if args.e2ee_own_key:
                provider.set_key(args.identity, key_change[1], 1)
            else:
                provider.set_shared_key(key_change[1], key_index=1)
            for cryptor in room.e2ee_manager.frame_cryptors():
                cryptor.set_key_index(1)
            log("key_changed", key_index=1)
            key_change = None
        if resize and now >= resize[0]:
            camera.resize(resize[1], resize[2])
            log("resized", width=resize[1], height=resize[2])
            resize = None
        if args.mute_camera:
            want_muted = args.mute_camera[0] <= now < args.mute_camera[1]
            if want_muted != muted:
                muted = want_muted
                video_track.mute() if muted else video_track.unmute()
                log("camera_muted" if muted else "camera_unmuted")
        if args.screen_share:
            sharing = args.screen_share[0] <= now < args.screen_share[1]
            if sharing and screen is None:
                screen_source = rtc.VideoSource(args.width, args.height)
                screen_track = rtc.LocalVideoTrack.create_video_track("screen", screen_source)
                screen_pub = await room.local_participant.publish_track(
                    screen_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_SCREENSHARE, video_codec=rtc.VideoCodec.VP8)
                )
                screen = (screen_source, screen_pub, Camera(args.index + 4, args.width, args.height, seed=50 + args.index))
                log("published", kind="screen", sid=screen_pub.sid)
            elif not sharing and screen is not None:
                await room.local_participant.unpublish_track(screen[1].sid)
                log("unpublished", kind="screen")
                screen = None
        # The frame due now, judged by its centre so the flash starts on the nearest frame.
        centre = video_n / args.fps + 0.5 / args.fps
        video_source.capture_frame(camera.frame(video_n, ((centre - phase) % 1.0) < FLASH_S))
        if screen is not None:
            screen[0].capture_frame(screen[2].frame(video_n // 3, False))
        video_n += 1
    if audio_task is not None:
        await audio_task
    log("leaving", frames=video_n)
    await room.disconnect()
    log("left")


START = time.monotonic()
if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
