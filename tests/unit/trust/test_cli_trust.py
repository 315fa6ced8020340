"""`gossipmesh network` and `gossipmesh cert`, end to end through click's runner."""

from __future__ import annotations

import ipaddress
import json
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gossipmesh.cli.main import main
from gossipmesh.cli.trust_report import parse_duration, utc
from gossipmesh.errors import UsageError
from gossipmesh.identity import Identity, encode_public_key, write_key_file
from gossipmesh.trust.authority import load_authority_key, load_network_file
from gossipmesh.trust.certificate import (
    encode_certificate_file,
    load_certificate_file,
    sign_certificate,
)
from gossipmesh.trust.revocation import load_revocation_file, revocations_of

NODE = Identity.from_seed(bytes(range(1, 33)))
NODE_KEY = encode_public_key(NODE.public_key)


def run(*args: str | Path, code: int = 0) -> Result:
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


@pytest.fixture
def net(tmp_path: Path) -> Path:
    run("network", "init", tmp_path / "net", "--name", "home", "--ipv4-network", "10.9.0.0/16")
    return tmp_path / "net"


def _sign(net: Path, out: Path, *extra: str | Path, code: int = 0) -> Result:
    return run(
        "cert",
        "sign",
        "--authority",
        net / "authority.key",
        "--network",
        net / "network.json",
        *(extra or ("--public-key", NODE_KEY)),
        "--out",
        out,
        code=code,
    )


def _revoke(net: Path, *what: str | Path, code: int = 0) -> Result:
    return run(
        "cert",
        "revoke",
        "--authority",
        net / "authority.key",
        "--network",
        net / "network.json",
        "--list",
        net / "revocations.bin",
        *what,
        code=code,
    )


# --- network init --------------------------------------------------------------


def test_init_writes_a_private_authority_and_a_public_network(tmp_path: Path) -> None:
    result = run("network", "init", tmp_path / "net", "--name", "Home")
    key, network = tmp_path / "net" / "authority.key", tmp_path / "net" / "network.json"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    desc = load_network_file(network)
    assert desc.name == "home"
    assert desc.ipv4_network == ipaddress.IPv4Network("100.64.0.0/10")
    assert desc.authority_public_key == load_authority_key(key).public_key
    assert abs(desc.created_at - time.time()) < 600
    assert encode_public_key(desc.authority_public_key) in result.output
    assert "offline" in result.output
    assert "give it to every node" in result.output


def test_init_never_overwrites(net: Path) -> None:
    before = {p.name: p.read_bytes() for p in net.iterdir()}
    result = run("network", "init", net, "--name", "other", code=2)
    assert "already exists; refusing to overwrite" in result.output
    assert {p.name: p.read_bytes() for p in net.iterdir()} == before


def test_init_refuses_a_half_existing_network(tmp_path: Path) -> None:
    (tmp_path / "network.json").write_text("{}")
    result = run("network", "init", tmp_path, "--name", "home", code=2)
    assert "network.json: already exists" in result.output
    assert not (tmp_path / "authority.key").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--name", "no spaces"), "letters, digits and hyphens"),
        (("--name", "home", "--ipv4-network", "10.9.0.1/16"), "--ipv4-network"),
        (("--name", "home", "--ipv4-network", "10.9.0.0/31"), "/30 or larger"),
    ],
)
def test_init_refuses_bad_input(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run("network", "init", tmp_path / "net", *args, code=2)
    assert message in result.output
    assert not (tmp_path / "net" / "authority.key").exists()


# --- cert sign / show / revoke, end to end ------------------------------------------


def test_init_sign_show_revoke_show(net: Path, tmp_path: Path) -> None:
    cert_path = tmp_path / "laptop.cert"
    signed = _sign(
        net,
        cert_path,
        "--public-key",
        NODE_KEY,
        "--name",
        "Laptop",
        "--group",
        "dev",
        "--group",
        "admins",
        "--ipv4",
        "10.9.1.2",
        "--route",
        "192.168.5.0/24",
        "--exit-node",
        "--valid-for",
        "90d",
    )
    cert = load_certificate_file(cert_path)
    assert f"serial       {cert.serial}" in signed.output
    assert "(90 days)" in signed.output
    assert cert.not_after - cert.not_before == 90 * 86_400
    assert (cert.name, cert.groups, str(cert.ipv4), cert.exit_node) == (
        "laptop",
        ("admins", "dev"),
        "10.9.1.2",
        True,
    )

    shown = run("cert", "show", cert_path, "--network", net / "network.json")
    for text in ("laptop", "admins, dev", "10.9.1.2", "192.168.5.0/24", "exit node        yes"):
        assert text in shown.output
    assert "network home     valid now" in shown.output
    assert "UTC (in 90 days)" in shown.output

    as_json = json.loads(
        run("cert", "show", cert_path, "--json", "--network", net / "network.json").output
    )
    assert as_json["serial"] == cert.serial
    assert as_json["not_after"] == cert.not_after
    assert as_json["node_public_key"] == NODE_KEY
    assert as_json["valid"] is True and as_json["refusal"] is None
    assert ipaddress.IPv4Address(as_json["derived_ipv4"]) in ipaddress.IPv4Network("10.9.0.0/16")
    addr = json.loads(
        run("addr", "--public-key", NODE_KEY, "--ipv4-network", "10.9.0.0/16", "--json").output
    )
    assert (as_json["key_name"], as_json["ipv6"], as_json["derived_ipv4"]) == (
        addr["key_name"],
        addr["ipv6"],
        addr["ipv4"],
    )

    revoked = _revoke(net, "--cert", cert_path)
    assert "version 1, 1 entry (1 serial, 0 node keys)" in revoked.output
    assert "gossipmesh revocations push" in revoked.output
    refused = run(
        "cert",
        "show",
        cert_path,
        "--network",
        net / "network.json",
        "--revocations",
        net / "revocations.bin",
        code=1,
    )
    assert "NOT valid: revoked" in refused.output


def test_show_without_a_network_only_explains(net: Path, tmp_path: Path) -> None:
    _sign(net, tmp_path / "node.cert")
    shown = run("cert", "show", tmp_path / "node.cert")
    assert "valid now" not in shown.output
    assert NODE_KEY in shown.output
    assert "name             -" in shown.output


def test_sign_from_a_node_key_file(net: Path, tmp_path: Path) -> None:
    write_key_file(tmp_path / "node.key", NODE)
    _sign(net, tmp_path / "node.cert", "--key", tmp_path / "node.key")
    assert load_certificate_file(tmp_path / "node.cert").node_public_key == NODE.public_key


def test_sign_never_overwrites(net: Path, tmp_path: Path) -> None:
    out = tmp_path / "node.cert"
    _sign(net, out)
    before = out.read_bytes()
    result = _sign(net, out, code=2)
    assert "already exists; refusing to overwrite a certificate" in result.output
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--public-key", NODE_KEY, "--ipv4", "10.10.0.1"), "outside the network's 10.9.0.0/16"),
        (("--public-key", NODE_KEY, "--ipv4", "10.9.255.255"), "reserved"),
        (("--public-key", NODE_KEY, "--ipv4", "nope"), "not an IPv4 address"),
        (("--public-key", NODE_KEY, "--route", "10.1.2.3/16"), "did you mean 10.1.0.0/16?"),
        (("--public-key", NODE_KEY, "--valid-for", "90x"), "use a number and a unit"),
        (("--public-key", NODE_KEY, "--valid-for", "0d"), "more than 0"),
        (("--public-key", NODE_KEY, "--group", "no spaces"), "group 'no spaces'"),
        (("--public-key", NODE_KEY, "--name", "gm-aaaaaaaaaaaaaaaa"), "reserved for key-derived"),
        (("--public-key", "AAAA"), "--public-key: public key must decode to 32 bytes"),
        ((), "give exactly one of --key PATH or --public-key BASE64"),
        (
            ("--public-key", NODE_KEY, *[f"--group=g{'x' * 50}{i}" for i in range(10)]),
            "cannot sign",
        ),
    ],
)
def test_sign_refuses_bad_input(
    net: Path, tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "node.cert"
    args = extra or ("--name", "x")
    result = _sign(net, out, *args, code=2)
    assert message in result.output
    assert not out.exists()


def test_sign_refuses_another_networks_authority(net: Path, tmp_path: Path) -> None:
    run("network", "init", tmp_path / "other", "--name", "other")
    result = run(
        "cert",
        "sign",
        "--authority",
        tmp_path / "other" / "authority.key",
        "--network",
        net / "network.json",
        "--public-key",
        NODE_KEY,
        "--out",
        tmp_path / "node.cert",
        code=2,
    )
    assert "not the authority of network 'home'" in result.output
    assert not (tmp_path / "node.cert").exists()


def test_a_node_key_is_not_an_authority_and_back(net: Path, tmp_path: Path) -> None:
    write_key_file(tmp_path / "node.key", NODE)
    as_authority = run(
        "cert",
        "sign",
        "--authority",
        tmp_path / "node.key",
        "--network",
        net / "network.json",
        "--public-key",
        NODE_KEY,
        "--out",
        tmp_path / "node.cert",
        code=2,
    )
    assert "this is a node key, not a network authority key" in as_authority.output
    as_node = _sign(net, tmp_path / "node.cert", "--key", net / "authority.key", code=2)
    assert "this is a network authority key, not a node key" in as_node.output
    addr = run("addr", "--key", net / "authority.key", code=2)
    assert "not a node key" in addr.output


def test_a_certificate_signed_by_a_node_key_is_refused(net: Path, tmp_path: Path) -> None:
    now = int(time.time())
    rogue = sign_certificate(
        NODE, NODE.public_key, "root", ["admins"], None, (), True, now, now + 60
    )
    (tmp_path / "rogue.cert").write_bytes(encode_certificate_file(rogue))
    result = run("cert", "show", tmp_path / "rogue.cert", "--network", net / "network.json", code=1)
    assert "NOT valid: signed by another authority" in result.output
    as_json = json.loads(
        run(
            "cert",
            "show",
            tmp_path / "rogue.cert",
            "--network",
            net / "network.json",
            "--json",
            code=1,
        ).output
    )
    assert as_json["refusal"] == "wrong_authority"
    revoke = _revoke(net, "--cert", tmp_path / "rogue.cert", code=2)
    assert "signed by another authority" in revoke.output


@pytest.mark.parametrize(
    ("start", "end", "message", "reason"),
    [
        (-5 * 86_400, -3 * 86_400, "NOT valid: expired 3 days ago", "expired"),
        (2 * 86_400, 3 * 86_400, "NOT valid: not valid yet (from", "not_yet_valid"),
    ],
)
def test_show_explains_time(
    net: Path, tmp_path: Path, start: int, end: int, message: str, reason: str
) -> None:
    authority = load_authority_key(net / "authority.key")
    now = int(time.time())
    cert = sign_certificate(
        authority, NODE.public_key, "", (), None, (), False, now + start, now + end
    )
    (tmp_path / "node.cert").write_bytes(encode_certificate_file(cert))
    result = run("cert", "show", tmp_path / "node.cert", "--network", net / "network.json", code=1)
    assert message in result.output
    as_json = json.loads(
        run(
            "cert",
            "show",
            tmp_path / "node.cert",
            "--network",
            net / "network.json",
            "--json",
            code=1,
        ).output
    )
    assert as_json["refusal"] == reason and as_json["valid"] is False


def test_show_refuses_a_tampered_file(net: Path, tmp_path: Path) -> None:
    _sign(net, tmp_path / "node.cert", "--public-key", NODE_KEY, "--name", "laptop")
    lines = (tmp_path / "node.cert").read_text().splitlines()
    middle = lines[2]
    lines[2] = middle[:10] + ("A" if middle[10] != "A" else "B") + middle[11:]
    (tmp_path / "node.cert").write_text("\n".join(lines) + "\n")
    result = run("cert", "show", tmp_path / "node.cert", code=2)
    assert "node.cert: " in result.output
    assert "damaged or altered" in result.output or "corrupt" in result.output


def test_show_needs_a_network_for_revocations(net: Path, tmp_path: Path) -> None:
    _sign(net, tmp_path / "node.cert")
    result = run(
        "cert", "show", tmp_path / "node.cert", "--revocations", tmp_path / "r.bin", code=2
    )
    assert "--revocations needs --network" in result.output


# --- cert revoke ------------------------------------------------------------------


def test_revoke_grows_and_versions_the_list(net: Path) -> None:
    _revoke(net, "--serial", "5", "--serial", "9")
    second = _revoke(net, "--public-key", NODE_KEY, "--serial", "5")
    assert "version 2, 3 entries (2 serials, 1 node key)" in second.output
    document = load_revocation_file(net / "revocations.bin")
    assert document is not None and document.version == 2
    desc = load_network_file(net / "network.json")
    revocations = revocations_of(document, desc.authority_public_key)
    assert revocations.serials == {5, 9} and revocations.public_keys == {NODE.public_key}


def test_revoking_again_changes_nothing(net: Path) -> None:
    _revoke(net, "--serial", "5")
    before = (net / "revocations.bin").read_bytes()
    again = _revoke(net, "--serial", "5")
    assert "already revoked" in again.output and "version 1" in again.output
    assert (net / "revocations.bin").read_bytes() == before


def test_revoke_refuses_another_authoritys_list(net: Path, tmp_path: Path) -> None:
    run("network", "init", tmp_path / "other", "--name", "other")
    run(
        "cert",
        "revoke",
        "--authority",
        tmp_path / "other" / "authority.key",
        "--network",
        tmp_path / "other" / "network.json",
        "--list",
        net / "revocations.bin",
        "--serial",
        "1",
    )
    before = (net / "revocations.bin").read_bytes()
    result = _revoke(net, "--serial", "2", code=2)
    assert "not a revocation list of network 'home'" in result.output
    assert (net / "revocations.bin").read_bytes() == before


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ((), "name what to revoke"),
        (("--serial", "-1"), "serial is out of range"),
        (("--public-key", "bad"), "--public-key: public key is not valid base64"),
    ],
)
def test_revoke_refuses_bad_input(net: Path, what: tuple[str, ...], message: str) -> None:
    result = _revoke(net, *what, code=2)
    assert message in result.output
    assert not (net / "revocations.bin").exists()


def test_revoke_refuses_a_damaged_list(net: Path) -> None:
    _revoke(net, "--serial", "5")
    damaged = (net / "revocations.bin").read_bytes()[:-3]
    (net / "revocations.bin").write_bytes(damaged)
    result = _revoke(net, "--serial", "6", code=2)
    assert "not a usable revocation list" in result.output
    assert (net / "revocations.bin").read_bytes() == damaged


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600s", 3600), ("30m", 1800), ("12h", 43_200), ("90d", 90 * 86_400), ("2W", 14 * 86_400)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "d", "1.5d", "-1d", "1d12h", "101000000d"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--valid-for"):
        parse_duration(text)


def test_times_far_out_of_range_still_print() -> None:
    assert utc(0) == "1970-01-01 00:00:00 UTC"
    assert utc((1 << 64) - 1) == f"{(1 << 64) - 1} (Unix time)"


def test_show_refuses_a_missing_revocation_list(net: Path, tmp_path: Path) -> None:
    _sign(net, tmp_path / "node.cert")
    result = run(
        "cert",
        "show",
        tmp_path / "node.cert",
        "--network",
        net / "network.json",
        "--revocations",
        tmp_path / "missing.bin",
        code=2,
    )
    assert "missing.bin: revocation list does not exist" in result.output


def test_the_authority_does_not_certify_itself(net: Path, tmp_path: Path) -> None:
    own = encode_public_key(load_authority_key(net / "authority.key").public_key)
    result = _sign(net, tmp_path / "node.cert", "--public-key", own, code=2)
    assert "the authority's own key" in result.output
    assert not (tmp_path / "node.cert").exists()
