"""Client/server version check: a mismatch gets one clear sentence, not an odd failure later.

Clients that know about this app (scripts; MedCF's Slicer module in its remote mode) send
``client_version`` (the MONAI Label version their client library speaks) in an infer
request's params. MONAI Label's REST routes and client library change between minor
releases, so a different major.minor is refused with what to install; patch releases of
one minor release are taken to talk to each other.
"""

from __future__ import annotations

from fastapi import HTTPException


def major_minor(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_client(request: dict, server_version: str) -> None:
    client = request.get("client_version")
    if not client:
        return
    if major_minor(client) != major_minor(server_version):
        raise HTTPException(
            status_code=409,
            detail=f"client speaks MONAI Label {client}, this server runs MONAI Label {server_version}: install "
                   f"monailabel=={server_version} on the client side (Slicer: the MONAI Label extension of the "
                   f"same release), or run a server of the client's version")
