"""What `gossipmesh up --network FILE --cert FILE` checks before the node exists.

A node of a network with an authority must present a certificate that the
authority signed for this node's key and that is valid now; otherwise the
others would refuse it anyway, so the daemon refuses to start and says why.
The certificate decides the node's name, and network.json the IPv4 range
and (unless a secret file is given) the secret that seals the DHT.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from gossipmesh.addressing import DEFAULT_IPV4_NETWORK
from gossipmesh.config import Settings
from gossipmesh.errors import UsageError
from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.trust.authority import NetworkDescription, load_network_file
from gossipmesh.trust.certificate import CertificateError, NodeCertificate, load_certificate_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trust:
    """The authority a node answers to, and the certificate it shows (None, b"": open)."""

    authority_public_key: bytes | None
    certificate: bytes
    name: str | None
    secret: NetworkSecret
    ipv4_network: ipaddress.IPv4Network
    """The mesh's IPv4 range: network.json's with an authority, else the settings'."""


def load_trust(settings: Settings, identity: Identity, now: float | None = None) -> Trust:
    """The trust settings of `up`, checked; UsageError/ConfigError with the fix otherwise."""
    if settings.network is None:
        if settings.cert is not None:
            raise UsageError("--cert needs --network NETWORK.json (the network that signed it)")
        log.warning(
            "no --network: this mesh has no authority, so every member holding the "
            "network secret may reach every port of every node and claim any free "
            "name or address (docs/trust.md)"
        )
        secret = _secret_file_or_open(settings.network_secret)
        return Trust(None, b"", settings.name, secret, settings.ipv4_network)
    network = load_network_file(settings.network)
    if settings.cert is None:
        raise UsageError(
            f"--network {settings.network} needs --cert: this node is admitted only with a "
            "certificate from the network's authority (gossipmesh cert sign)"
        )
    certificate = load_certificate_file(settings.cert)
    wall = time.time() if now is None else now
    try:
        certificate.check(network.authority_public_key, identity.public_key, wall)
    except CertificateError as exc:
        raise UsageError(f"{settings.cert}: {exc}") from None
    _check_ipv4_network(settings, network)
    name = _name_from(certificate, settings)
    secret = (
        NetworkSecret.from_file(settings.network_secret)
        if settings.network_secret is not None
        else NetworkSecret(network.network_secret)
    )
    return Trust(
        network.authority_public_key, certificate.encode(), name, secret, network.ipv4_network
    )


def _check_ipv4_network(settings: Settings, network: NetworkDescription) -> None:
    given: ipaddress.IPv4Network = settings.ipv4_network
    if given != DEFAULT_IPV4_NETWORK and given != network.ipv4_network:
        raise UsageError(
            f"--ipv4-network {given} differs from {network.ipv4_network} in the network file"
        )


def _name_from(certificate: NodeCertificate, settings: Settings) -> str | None:
    """The certificate's name: a different --name would be refused by every other node."""
    if settings.name and settings.name != certificate.name:
        granted = certificate.name or "no name"
        raise UsageError(
            f"--name {settings.name}: the certificate grants {granted}; "
            "in a network with an authority the certificate decides the name"
        )
    return certificate.name or None


def _secret_file_or_open(path: Path | None) -> NetworkSecret:
    if path is None:
        log.warning(
            "no --network-secret: this is an open network that anyone who can reach "
            "the port may join"
        )
        return NetworkSecret.open_network()
    return NetworkSecret.from_file(path)
