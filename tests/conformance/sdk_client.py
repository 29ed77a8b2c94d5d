"""Conformance client: LiveKit's official Python SDK joins a devroom room and receives every track.

Prints one JSON object: the tracks subscribed and the frames decoded from each. Exit status 0 only
when every expected track delivered frames.
"""

import argparse
import asyncio
import json
import os
import sys

from livekit import api, rtc


async def count_frames(track, stream, counts):
    async for _event in stream:
        counts[track.sid] = counts.get(track.sid, 0) + 1


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--expect-tracks", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()

    token = (
        api.AccessToken(args.api_key, args.api_secret)
        .with_identity("sdk-conformance")
        .with_grants(api.VideoGrants(room_join=True, room=args.room, can_publish=False))
        .to_jwt()
    )
    room = rtc.Room()
    subscribed = {}
    counts = {}
    tasks = []

    @room.on("track_subscribed")
    def on_track(track, publication, participant):
        subscribed[track.sid] = {"participant": participant.identity, "kind": str(track.kind), "mime": publication.mime_type}
        stream = rtc.VideoStream(track) if track.kind == rtc.TrackKind.KIND_VIDEO else rtc.AudioStream(track)
        tasks.append(asyncio.ensure_future(count_frames(track, stream, counts)))

    await room.connect(args.url, token, rtc.RoomOptions(auto_subscribe=True))
    remote = {p.identity: [t.sid for t in p.track_publications.values()] for p in room.remote_participants.values()}
    await asyncio.sleep(args.seconds)
    result = {
        "room_sid": await room.sid,
        "remote_participants": remote,
        "subscribed": subscribed,
        "frames": counts,
    }
    await room.disconnect()
    for task in tasks:
        task.cancel()
    print(json.dumps(result))
    ok = len(subscribed) >= args.expect_tracks and all(counts.get(sid, 0) > 0 for sid in subscribed)
    return 0 if ok else 1


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    # Leave without the SDK's process-exit teardown: its native library sometimes aborts there ("panic
    # in a function that cannot unwind", seen once in ~10 runs) after the room was left cleanly and the
    # result printed, which would fail the test for a fault that is not the server's.
    os._exit(code)
