"""How a container is recreated from another, the way Compose does it: from everything the engine reports
for the old one (its whole Config and HostConfig, its networks, its volumes), changing only what must
change — the image (a rollback), or the name and number (a new replica).

Pure functions over inspect data: plans use them to describe and fingerprint a recreate, effects to build
the engine's create request from a fresh inspection, checked against that fingerprint."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

__all__ = ["Blueprint", "blueprint", "config_digest", "volumes_kept"]

NUMBER_LABEL = "com.docker.compose.container-number"
# The engine names an anonymous volume with 64 hex digits (and, from Docker 23, labels it too).
_ANONYMOUS = re.compile(r"^[0-9a-f]{64}$")

# Settings the old container took from its image. When the image changes they come from the new image:
# a rollback must not keep the bad image's own environment or command. (Compared with the old image's.)
_FROM_IMAGE_IF_EQUAL = ("Cmd", "Entrypoint", "WorkingDir", "User", "Healthcheck", "StopSignal", "Shell")
# Config fields the engine fills in or that only an image has: never sent on create.
_CONFIG_DROPPED = ("Image", "OnBuild", "ArgsEscaped")
# HostConfig fields that cannot be copied as they are.
_HOST_DROPPED = ("ContainerIDFile",)  # a file the engine writes at create: it exists, so create would fail
# Network endpoint settings a new endpoint takes; the rest (addresses, ids) is the engine's.
_ENDPOINT_KEPT = ("IPAMConfig", "Links", "Aliases", "DriverOpts")


def _endpoints(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    short_id = str(attrs["Id"])[:12]
    out = {}
    for name, endpoint in networks.items():
        kept = {k: (endpoint or {}).get(k) for k in _ENDPOINT_KEPT}
        # The engine adds the container's short id as an alias on user networks: that one is its own.
        kept["Aliases"] = [a for a in kept.get("Aliases") or [] if a != short_id] or None
        out[name] = kept
    return out


def config_digest(attrs: dict[str, Any]) -> str:
    """A fingerprint of everything a recreate copies from a container: an approval binds it, and the
    effect refuses to act if the container changed since (without putting its env into the plan)."""
    canonical = json.dumps(
        {"Config": attrs.get("Config"), "HostConfig": attrs.get("HostConfig"), "Networks": _endpoints(attrs)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _bind_target(bind: str) -> str:
    # "source:/target[:options]" or "/target"
    parts = bind.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def volumes_kept(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """Anonymous volumes of the container that no Bind or Mount names: a recreate mounts them again by
    name, as Compose does, or the new container would get empty ones."""
    host = attrs.get("HostConfig") or {}
    covered = {_bind_target(b) for b in host.get("Binds") or []}
    covered |= {m.get("Target") for m in host.get("Mounts") or [] if m.get("Source")}
    return [
        {"Type": "volume", "Source": m["Name"], "Target": m["Destination"], "ReadOnly": not m.get("RW", True)}
        for m in attrs.get("Mounts") or []
        if m.get("Type") == "volume" and m.get("Name") and m.get("Destination") not in covered
    ]


def _without_image_defaults(config: dict[str, Any], image_config: dict[str, Any]) -> dict[str, Any]:
    own = dict(config)
    image_env = set(image_config.get("Env") or [])
    own["Env"] = [e for e in config.get("Env") or [] if e not in image_env] or None
    image_labels = image_config.get("Labels") or {}
    own["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items() if image_labels.get(k) != v}
    for key in ("ExposedPorts", "Volumes"):
        image_keys = set(image_config.get(key) or {})
        own[key] = {k: v for k, v in (config.get(key) or {}).items() if k not in image_keys} or None
    for key in _FROM_IMAGE_IF_EQUAL:
        if config.get(key) == image_config.get(key):
            own[key] = None
    return own


def _links(links: list[str] | None) -> list[str] | None:
    # Inspect says "/db:/sandbox-app-1/db"; create takes "db:db".
    if not links:
        return None
    out = []
    for link in links:
        source, _, alias = link.partition(":")
        out.append(f"{source.lstrip('/')}:{alias.rsplit('/', 1)[-1]}")
    return out


class Blueprint:
    """The engine's create request for the new container, and the networks to connect it to after."""

    def __init__(self, body: dict[str, Any], more_networks: dict[str, dict[str, Any]]) -> None:
        self.body = body
        self.more_networks = more_networks


def blueprint(
    attrs: dict[str, Any],
    image_config: dict[str, Any],
    *,
    image: str,
    replica: tuple[str, int] | None = None,
) -> Blueprint:
    """The create request for a container like `attrs` from `image` (whose settings it takes where the old
    one only had its old image's, `image_config`). With `replica` (name, number) it is a new replica: its
    own name and number, its own anonymous volumes and addresses; otherwise it replaces the old container
    and mounts the old one's anonymous volumes."""
    host = {k: v for k, v in (attrs.get("HostConfig") or {}).items() if k not in _HOST_DROPPED}
    if host.get("VolumesFrom"):
        raise ValueError("volumes_from cannot be recreated safely (the volumes would be mounted twice)")
    config = {
        k: v for k, v in _without_image_defaults(attrs["Config"], image_config).items() if k not in _CONFIG_DROPPED
    }
    if config.get("Hostname") == str(attrs["Id"])[:12]:
        config["Hostname"] = None  # the engine's default (the old id), not a chosen name
    host["Links"] = _links(host.get("Links"))
    endpoints = _endpoints(attrs)
    mode = str(host.get("NetworkMode") or "")
    if mode.startswith("container:"):
        # The engine copies the other container's names into this one, and refuses them on create.
        config["Hostname"] = config["Domainname"] = None
    if replica is None:
        kept = volumes_kept(attrs)
        if kept:
            # A sourceless --mount asks for a fresh anonymous volume: replaced by the old one, by name.
            again = {m["Target"] for m in kept}
            own = [m for m in host.get("Mounts") or [] if m.get("Source") or m.get("Target") not in again]
            host["Mounts"] = [*own, *kept]
    else:
        _, number = replica
        config["Labels"] = {**(config.get("Labels") or {}), NUMBER_LABEL: str(number)}
        config["MacAddress"] = None
        # A replica's anonymous volumes are its own (fresh, at the same places), as with Compose: never the
        # ones a rollback mounted into the first container by name.
        host["Mounts"] = [
            {k: v for k, v in m.items() if k != "Source"} if _ANONYMOUS.match(str(m.get("Source") or "")) else m
            for m in host.get("Mounts") or []
        ] or None
        own_name = str(attrs.get("Name") or "").lstrip("/")
        for endpoint in endpoints.values():
            endpoint["IPAMConfig"] = None  # a second container cannot have the first one's address
            endpoint["Aliases"] = [a for a in endpoint.get("Aliases") or [] if a != own_name] or None
    shared = mode in ("host", "none") or mode.startswith("container:")
    first = mode if mode in endpoints else next(iter(endpoints), None)
    body: dict[str, Any] = {**config, "Image": image, "HostConfig": host}
    more: dict[str, dict[str, Any]] = {}
    if first is not None and not shared:
        body["NetworkingConfig"] = {"EndpointsConfig": {first: endpoints[first]}}
        more = {name: ep for name, ep in endpoints.items() if name != first}
    return Blueprint(body, more)
