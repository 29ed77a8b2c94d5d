"""Egress conformance client: LiveKit's official Python server SDK (`livekit-api`) drives the fleet's
Egress-compatible API as it would drive LiveKit Egress.

Prints one JSON object with what each call returned (or the Twirp error code and HTTP status it raised).
The Rust test (tests/e2e/egress.rs) checks the values.
"""

import argparse
import asyncio
import json

from livekit import api


def failure(err):
    return {"code": err.code, "status": err.status, "msg": err.message}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--stop", help="egress id to stop (second call)")
    args = parser.parse_args()
    out = {}
    lk = api.LiveKitAPI(args.url, args.api_key, args.api_secret)
    try:
        if args.stop:
            info = await lk.egress.stop_egress(api.StopEgressRequest(egress_id=args.stop))
            out["stopped"] = {"egress_id": info.egress_id, "status": api.EgressStatus.Name(info.status)}
            print(json.dumps(out))
            return
        small = api.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=800)
        file = api.EncodedFileOutput(file_type=api.EncodedFileType.MP4, filepath="calls/{room_name}/{publisher_identity}-{time}")
        info = await lk.egress.start_participant_egress(
            api.ParticipantEgressRequest(room_name=args.room, identity=args.identity, file_outputs=[file], advanced=small)
        )
        out["started"] = {"egress_id": info.egress_id, "status": api.EgressStatus.Name(info.status), "room_name": info.room_name,
                          "identity": info.participant.identity}
        listed = await lk.egress.list_egress(api.ListEgressRequest(room_name=args.room))
        out["listed"] = [item.egress_id for item in listed.items]
        try:
            await lk.egress.start_track_egress(api.TrackEgressRequest(room_name=args.room, track_id="TR_x",
                                                                      file=api.DirectFileOutput(filepath="t.ogg")))
            out["track"] = "accepted"
        except api.TwirpError as err:
            out["track"] = failure(err)
        try:
            await lk.egress.start_room_composite_egress(
                api.RoomCompositeEgressRequest(room_name=args.room, stream_outputs=[api.StreamOutput(protocol=api.StreamProtocol.SRT, urls=["srt://x:9000"])])
            )
            out["stream"] = "accepted"
        except api.TwirpError as err:
            out["stream"] = failure(err)
        try:
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id="EG_doesnotexist"))
            out["stop_unknown"] = "accepted"
        except api.TwirpError as err:
            out["stop_unknown"] = failure(err)
    finally:
        await lk.aclose()
    # A token signed with another secret is refused.
    wrong = api.LiveKitAPI(args.url, args.api_key, "not-the-secret-0123456789")
    try:
        await wrong.egress.list_egress(api.ListEgressRequest())
        out["wrong_secret"] = "accepted"
    except api.TwirpError as err:
        out["wrong_secret"] = failure(err)
    finally:
        await wrong.aclose()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
