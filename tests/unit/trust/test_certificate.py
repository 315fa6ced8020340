"""Node certificates: only the network authority's, only for the key presenting it, only in time."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.errors import ConfigError, LabelError
from gossipmesh.identity import Identity
from gossipmesh.names import key_name
from gossipmesh.trust.certificate import (
    ARMOR_BEGIN,
    ARMOR_END,
    CERTIFICATE_EXTENSION,
    MAX_CERTIFICATE_SIZE,
    MAX_CLOCK_SKEW,
    MAX_GROUPS,
    CertificateError,
    CertificateRefusal,
    NodeCertificate,
    decode_certificate,
    encode_certificate_file,
    load_certificate_file,
    parse_certificate_file,
    sign_certificate,
)

AUTHORITY = Identity.from_seed(bytes(range(32)))
OTHER_AUTHORITY = Identity.from_seed(bytes(32))
NODE = Identity.from_seed(bytes(range(1, 33)))
OTHER_NODE = Identity.from_seed(bytes(range(2, 34)))
START = 1_700_000_000
END = START + 86_400


def _cert(authority: Identity = AUTHORITY, **changes: object) -> NodeCertificate:
    fields: dict[str, object] = {
        "node_public_key": NODE.public_key,
        "name": "laptop",
        "groups": ("admins", "dev"),
        "ipv4": ipaddress.IPv4Address("100.64.0.7"),
        "routes": (ipaddress.ip_network("192.168.1.0/24"), ipaddress.ip_network("fd12::/48")),
        "exit_node": True,
        "not_before": START,
        "not_after": END,
        "serial": 77,
    }
    fields.update(changes)
    return sign_certificate(authority, **fields)  # type: ignore[arg-type]


CERT = _cert()


def _refusal(cert: NodeCertificate, now: float = START + 10, **kwargs: object) -> str:
    with pytest.raises(CertificateError) as caught:
        cert.check(AUTHORITY.public_key, NODE.public_key, now, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


def test_extension_type_is_not_the_routed_prefixes_one() -> None:
    from gossipmesh.directory import ROUTED_PREFIXES_EXTENSION

    assert CERTIFICATE_EXTENSION == 2 != ROUTED_PREFIXES_EXTENSION


def test_round_trip_and_check() -> None:
    data = CERT.encode()
    assert len(data) <= MAX_CERTIFICATE_SIZE
    decoded = decode_certificate(data)
    assert decoded == CERT
    assert decoded.encode() == data
    decoded.check(AUTHORITY.public_key, NODE.public_key, START + 10)


def test_a_minimal_certificate_round_trips() -> None:
    cert = _cert(name="", groups=(), ipv4=None, routes=(), exit_node=False)
    assert decode_certificate(cert.encode()) == cert
    assert (cert.name, cert.ipv4, cert.exit_node) == ("", None, False)
    assert not cert.grants_name("")


def test_signing_normalizes_what_the_operator_typed() -> None:
    cert = _cert(
        name="LapTop",
        groups=["Dev", "admins", "dev"],
        routes=[ipaddress.ip_network("fd12::/48"), ipaddress.ip_network("10.0.0.0/8")],
    )
    assert cert.name == "laptop"
    assert cert.groups == ("admins", "dev")
    assert cert.routes == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd12::/48"))


def test_serials_are_random_u64s_unless_given() -> None:
    serials = {_cert(serial=None).serial for _ in range(4)}
    assert len(serials) == 4
    assert all(0 < serial < 1 << 64 for serial in serials)


def test_every_flipped_bit_is_refused() -> None:
    data = CERT.encode()
    for index in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[index] ^= 1 << bit
            with pytest.raises(CertificateError):
                decode_certificate(bytes(damaged)).check(
                    AUTHORITY.public_key, NODE.public_key, START + 10
                )


def test_another_authority_is_refused() -> None:
    assert _refusal(_cert(OTHER_AUTHORITY)) is CertificateRefusal.WRONG_AUTHORITY


def test_a_forged_signature_claiming_our_authority_is_refused() -> None:
    forged = _cert(OTHER_AUTHORITY, name="root", groups=("admins",))
    claimed = replace(forged, authority_public_key=AUTHORITY.public_key)
    assert _refusal(decode_certificate(claimed.encode())) is CertificateRefusal.BAD_SIGNATURE


def test_a_certificate_widened_after_signing_is_refused() -> None:
    widened = replace(CERT, routes=(ipaddress.ip_network("0.0.0.0/0"),))
    assert _refusal(widened) is CertificateRefusal.BAD_SIGNATURE
    longer = replace(CERT, not_after=END + 10**9)
    assert _refusal(longer) is CertificateRefusal.BAD_SIGNATURE


def test_another_nodes_certificate_is_refused() -> None:
    with pytest.raises(CertificateError) as caught:
        CERT.check(AUTHORITY.public_key, OTHER_NODE.public_key, START + 10)
    assert caught.value.reason is CertificateRefusal.WRONG_KEY


def test_validity_window_with_skew_on_not_before_only() -> None:
    CERT.check(AUTHORITY.public_key, NODE.public_key, START - MAX_CLOCK_SKEW)
    assert _refusal(CERT, START - MAX_CLOCK_SKEW - 1) is CertificateRefusal.NOT_YET_VALID
    CERT.check(AUTHORITY.public_key, NODE.public_key, END - 0.5)
    assert _refusal(CERT, END) is CertificateRefusal.EXPIRED
    assert _refusal(CERT, END + 10**6) is CertificateRefusal.EXPIRED


class _Revoked:
    def __init__(self, serial: int) -> None:
        self.serial = serial

    def revokes(self, cert: NodeCertificate) -> bool:
        return cert.serial == self.serial


def test_revocation_is_asked_and_wins_over_time() -> None:
    CERT.check(AUTHORITY.public_key, NODE.public_key, START, revocations=_Revoked(78))
    assert _refusal(CERT, revocations=_Revoked(77)) is CertificateRefusal.REVOKED
    assert _refusal(CERT, END + 1, revocations=_Revoked(77)) is CertificateRefusal.REVOKED


def test_only_the_named_authority_signs() -> None:
    with pytest.raises(ValueError, match="authority it names"):
        CERT.signed_by(OTHER_AUTHORITY)


def test_grants() -> None:
    assert CERT.grants_name("laptop") and CERT.grants_name("LAPTOP")
    assert not CERT.grants_name("server")
    assert CERT.grants_ipv4(ipaddress.IPv4Address("100.64.0.7"))
    assert not CERT.grants_ipv4(ipaddress.IPv4Address("100.64.0.8"))
    assert CERT.grants_route(ipaddress.ip_network("192.168.1.0/24"))
    assert CERT.grants_route(ipaddress.ip_network("192.168.1.128/25"))
    assert not CERT.grants_route(ipaddress.ip_network("192.168.0.0/16"))
    assert not CERT.grants_route(ipaddress.ip_network("192.168.2.0/24"))
    assert CERT.grants_route(ipaddress.ip_network("fd12:0:0:1::/64"))
    assert not CERT.grants_route(ipaddress.ip_network("fd13::/48"))
    unaddressed = _cert(ipv4=None, routes=())
    assert not unaddressed.grants_ipv4(ipaddress.IPv4Address("100.64.0.7"))
    assert not unaddressed.grants_route(ipaddress.ip_network("192.168.1.0/24"))


def test_names_follow_the_name_rules() -> None:
    with pytest.raises(LabelError):
        _cert(name="not a label")
    squatted = key_name(OTHER_NODE.node_id)
    with pytest.raises(LabelError, match="reserved for key-derived names"):
        _cert(name=squatted)
    assert _cert(name=key_name(NODE.node_id)).name == key_name(NODE.node_id)
    with pytest.raises(LabelError, match="group 'bad group'"):
        _cert(groups=["bad group"])


@pytest.mark.parametrize(
    "changes",
    [
        {"groups": ("dev", "admins")},
        {"groups": ("dev", "dev")},
        {"groups": ("Dev",)},
        {"groups": tuple(f"g{i:02}" for i in range(MAX_GROUPS + 1))},
        {"name": "Laptop"},
        {"routes": (ipaddress.ip_network("fd12::/48"), ipaddress.ip_network("10.0.0.0/8"))},
        {"not_after": START},
        {"serial": -1},
        {"serial": 1 << 64},
        {"node_public_key": bytes(31)},
        {"signature": bytes(63)},
    ],
)
def test_non_canonical_values_are_not_encoded(changes: dict[str, object]) -> None:
    with pytest.raises(CertificateError) as caught:
        replace(CERT, **changes).encode()  # type: ignore[arg-type]
    assert caught.value.reason is CertificateRefusal.MALFORMED


def test_the_size_bound_holds_at_signing() -> None:
    groups = [f"{'g' * 60}{i:02}" for i in range(MAX_GROUPS)]
    with pytest.raises(CertificateError, match=f"over {MAX_CERTIFICATE_SIZE}"):
        _cert(groups=groups)


def _malformed(data: bytes) -> None:
    with pytest.raises(CertificateError) as caught:
        decode_certificate(data)
    assert caught.value.reason is CertificateRefusal.MALFORMED


def test_truncations_and_padding_are_malformed() -> None:
    data = CERT.encode()
    for length in range(len(data)):
        _malformed(data[:length])
    _malformed(data + b"\x00")
    _malformed(bytes(MAX_CERTIFICATE_SIZE + 1))


def test_unknown_format_and_flags_are_refused_not_ignored() -> None:
    data = bytearray(CERT.encode())
    data[0] = 2
    _malformed(bytes(data))
    data = bytearray(CERT.encode())
    data[1 + 32 + 32 + 8 + 8 + 8] |= 0x80
    with pytest.raises(CertificateError, match="unknown flags 0x83"):
        decode_certificate(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_CERTIFICATE_SIZE + 8))
def test_any_bytes_give_a_certificate_or_a_refusal(data: bytes) -> None:
    try:
        cert = decode_certificate(data)
    except CertificateError as exc:
        assert exc.reason is CertificateRefusal.MALFORMED
    else:
        assert cert.encode() == data


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(CERT.encode()) - 1), st.integers(1, 255))
def test_any_changed_byte_is_refused(index: int, xor: int) -> None:
    data = bytearray(CERT.encode())
    data[index] ^= xor
    with pytest.raises(CertificateError):
        decode_certificate(bytes(data)).check(AUTHORITY.public_key, NODE.public_key, START)


# --- the certificate file ----------------------------------------------------


def test_file_round_trip(tmp_path: Path) -> None:
    data = encode_certificate_file(CERT)
    lines = data.decode().splitlines()
    assert lines[0] == ARMOR_BEGIN and lines[-1] == ARMOR_END
    assert all(len(line) <= 64 for line in lines[1:-1])
    path = tmp_path / "node.cert"
    path.write_bytes(data)
    assert load_certificate_file(path) == CERT


def test_text_around_the_block_is_ignored() -> None:
    data = b"laptop's certificate\n\n" + encode_certificate_file(CERT) + b"\nthanks\n"
    assert parse_certificate_file(data) == CERT


def _file_error(data: bytes) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_certificate_file(data, "node.cert")
    message = str(caught.value)
    assert message.startswith("node.cert: ")
    return message


def test_file_errors_say_what_is_wrong() -> None:
    armored = encode_certificate_file(CERT)
    assert "not a gossipmesh certificate" in _file_error(b"hello\n")
    assert "not a gossipmesh certificate" in _file_error(armored + armored)
    assert "not ASCII" in _file_error("é".encode())
    assert "too large" in _file_error(b"x" * 10_000)
    lines = armored.decode().splitlines()
    assert "END line comes before" in _file_error("\n".join(reversed(lines)).encode())
    corrupt = "\n".join([lines[0], lines[1][:-1] + "!", *lines[2:]]).encode()
    assert "not valid base64" in _file_error(corrupt)
    short = "\n".join([lines[0], lines[1], lines[-1]]).encode()
    assert "certificate is corrupt" in _file_error(short)


def test_an_altered_file_is_caught_on_reading() -> None:
    altered = replace(CERT, exit_node=False)
    message = _file_error(encode_certificate_file(altered))
    assert "damaged or altered" in message


def test_load_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="certificate file does not exist"):
        load_certificate_file(tmp_path / "missing.cert")
    with pytest.raises(ConfigError, match="is a directory"):
        load_certificate_file(tmp_path)
