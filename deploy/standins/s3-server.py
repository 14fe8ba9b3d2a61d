"""S3 stand-in for MinIO in the stack test: moto's S3 server with persistence.

moto keeps buckets in memory. Its recorder appends every request it serves to a file;
this entrypoint keeps that file on the data volume and replays it when the server starts,
so buckets and objects survive `docker compose down` / `up` and a killed container.
Appends are serialised (moto's recorder writes a line in two calls). The replay is ours,
not moto's: a multipart upload gets a new random upload id when replayed, so the ids of
its later requests are mapped onto the new one. /tmp/s3-ready exists once the replay is
done (the override's healthcheck looks for it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

UPLOAD_ID = re.compile(r"(?:^|&)uploadId=([^&]+)")
NEW_UPLOAD = re.compile(r"(?:^|&)uploads(?:=[^&]*)?(?:&|$)")


def replay(recording: Path, base: str) -> int:
    """Send every recorded request again, in order; returns how many were sent."""
    import requests

    session = requests.Session()
    pending: dict[str, list[str]] = {}  # object path -> upload ids created by the replay
    mapping: dict[str, str] = {}  # recorded upload id (as in the URL) -> replayed one
    sent = 0
    with recording.open() as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: the request failed
                continue
            body = entry.get("body") or b""
            if entry.get("body_encoded"):
                body = base64.b64decode(body)
            url = urlsplit(entry["url"])
            query = url.query
            if found := UPLOAD_ID.search(query):
                old = found.group(1)
                if old not in mapping and pending.get(url.path):
                    mapping[old] = quote(pending[url.path].pop(0), safe="")
                query = query.replace(old, mapping.get(old, old))
            headers = {
                k: v for k, v in entry["headers"].items() if k.lower() != "transfer-encoding"
            }
            target = base + url.path + (f"?{query}" if query else "")
            reply = session.request(entry["method"], target, headers=headers, data=body)
            if reply.status_code >= 300 and entry["method"] != "GET":
                print(f"replay: {entry['method']} {url.path} -> {reply.status_code}", flush=True)
            new = re.search(r"<UploadId>([^<]+)</UploadId>", reply.text)
            if entry["method"] == "POST" and NEW_UPLOAD.search(query) and new:
                pending.setdefault(url.path, []).append(new.group(1))
            sent += 1
    return sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--data", type=Path, default=Path("/data"))
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    recording = args.data / "requests.jsonl"
    ready = Path("/tmp/s3-ready")
    ready.unlink(missing_ok=True)
    os.environ["MOTO_RECORDER_FILEPATH"] = str(recording)

    from moto.moto_api import recorder
    from moto.server import ThreadedMotoServer

    lock = threading.Lock()
    record = recorder._record_request

    def locked_record(*a: object, **kw: object) -> None:
        with lock:
            record(*a, **kw)  # type: ignore[arg-type]

    recorder._record_request = locked_record  # type: ignore[method-assign]

    server = ThreadedMotoServer(ip_address="0.0.0.0", port=args.port, verbose=False)
    server.start()
    started = time.monotonic()
    if recording.exists() and recording.stat().st_size:
        sent = replay(recording, f"http://127.0.0.1:{args.port}")
        print(f"s3 stand-in: replayed {sent} requests in {time.monotonic() - started:.1f} s")
    recorder.start_recording()
    ready.write_text("ready\n")
    print(f"s3 stand-in (moto) listening on :{args.port}, recording to {recording}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
