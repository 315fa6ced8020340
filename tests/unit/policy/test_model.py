"""The policy file: what it parses to, and an error naming the place for every mistake."""

from __future__ import annotations

import ipaddress

import pytest

from gossipmesh.errors import ConfigError
from gossipmesh.policy import model
from gossipmesh.policy.model import MAX_POLICY_BYTES, Protocol, parse_policy
from gossipmesh.policy.peer import Endpoint

EXAMPLE = """
version = 4
[groups]
admins = ["group:dev", "host:alice"]
everyone-ops = ["group:admins", "cidr:10.9.0.0/16"]
[hosts]
lab = "10.20.0.0/24"
gateway = ["10.20.0.1", "fd20::1"]
printer = "10.20.0.7"
[[rules]]
from = ["group:admins"]
to = ["group:web", "host:lab"]
proto = "TCP"
ports = ["22", "8000-8100", 8050, 23, "24 - 30"]
[[rules]]
from = "*"
to = "host:printer"
proto = "icmp"
[[tests]]
from = "host:alice"
to = "group:web"
proto = "tcp"
port = 22
expect = "allow"
[[tests]]
from = "group:ops"
from_address = "10.9.1.1"
to = "host:printer"
proto = "icmp"
expect = "allow"
[[tests]]
from = "cidr:10.1.2.3"
to = "host:bob"
to_groups = ["web", "DB"]
proto = "udp"
port = 53
expect = "deny"
"""


def test_the_example_parses_to_flattened_rules() -> None:
    policy = parse_policy(EXAMPLE, "policy.toml")
    assert policy.version == 4
    assert policy.source == EXAMPLE
    first, second = policy.rules
    assert (first.number, second.number) == (1, 2)
    assert first.protocol is Protocol.TCP
    assert first.ports == ((22, 30), (8000, 8100))  # merged, sorted, adjacent joined
    assert first.sources.names == {"alice"}
    assert first.sources.groups == {"admins", "dev"}
    assert first.destinations.groups == {"web"}
    assert first.destinations.names == {"lab"}
    assert first.destinations.networks == (ipaddress.ip_network("10.20.0.0/24"),)
    assert second.sources.everything and second.ports is None
    assert policy.groups["everyone-ops"].groups == {"everyone-ops", "admins", "dev"}
    assert policy.groups["everyone-ops"].networks == (ipaddress.ip_network("10.9.0.0/16"),)
    assert policy.hosts["gateway"] == (
        ipaddress.ip_network("10.20.0.1/32"),
        ipaddress.ip_network("fd20::1/128"),
    )


def test_tests_become_synthetic_endpoints() -> None:
    alice, ops, address = parse_policy(EXAMPLE).tests
    assert alice.source == Endpoint(None, "alice", frozenset())
    assert alice.destination == Endpoint(None, None, frozenset({"web"}))
    assert (alice.protocol, alice.port, alice.expect_allow) == (Protocol.TCP, 22, True)
    assert alice.description == "host:alice -> group:web tcp/22"
    assert ops.source == Endpoint(ipaddress.ip_address("10.9.1.1"), None, frozenset({"ops"}))
    assert ops.destination == Endpoint(ipaddress.ip_address("10.20.0.7"))  # a [hosts] entry
    assert ops.port == 0
    assert address.source == Endpoint(ipaddress.ip_address("10.1.2.3"))
    assert address.destination == Endpoint(None, "bob", frozenset({"web", "db"}))
    assert not address.expect_allow


def test_an_empty_rule_list_denies_everything_and_is_valid() -> None:
    policy = parse_policy("version = 1\n")
    assert policy.rules == () and policy.tests == ()


RULE = '[[rules]]\nfrom = ["*"]\nto = ["*"]\nproto = "tcp"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version = 1\n[[rules]\n", "policy.toml: invalid TOML"),
        ("", "policy.toml: 'version' is required"),
        ("version = 0\n", "policy.toml: version: 0 is not a positive integer"),
        ("version = -3\n", "version: -3 is not a positive integer"),
        ('version = "4"\n', "version: '4' is not a positive integer"),
        ("version = true\n", "version: True is not a positive integer"),
        (f"version = {1 << 64}\n", "is not a positive integer below 2**64"),
        ("version = 1\nrule = 3\n", "policy.toml: unknown key 'rule' (known: groups, hosts,"),
        ("version = 1\nrules = 3\n", "policy.toml: write rules as [[rules]] tables"),
        ("version = 1\n" + RULE + "port = [22]\n", "[[rules]] #1: unknown key 'port'"),
        ("version = 1\n[[rules]]\nto = ['*']\nproto = 'tcp'\n", "[[rules]] #1: 'from' is required"),
        ("version = 1\n[[rules]]\nfrom = ['*']\nproto = 'tcp'\n", "[[rules]] #1: 'to' is required"),
        ("version = 1\n[[rules]]\nfrom = ['*']\nto = ['*']\n", "[[rules]] #1: 'proto' is required"),
        ("version = 1\n" + RULE.replace('"tcp"', '"sctp"'), "proto: 'sctp' is not one of tcp, udp"),
        ("version = 1\n" + RULE.replace('["*"]', "[]", 1), "#1: from: must be a non-empty list"),
        ("version = 1\n" + RULE.replace('["*"]', "[3]", 1), "#1: from: 3 is not a string"),
        ("version = 1\n" + RULE.replace('"*"', '"grp:dev"', 1), "'grp:dev' is not a selector"),
        ("version = 1\n" + RULE.replace('"*"', '"group:"', 1), "'group:': nothing after group:"),
        ("version = 1\n" + RULE.replace('"*"', '"group:a_b"', 1), "from: group:a_b: name 'a_b'"),
        ("version = 1\n" + RULE.replace('"*"', '"cidr:10.0.0.1/24"', 1), "has host bits set"),
        ("version = 1\n" + RULE.replace('"*"', '"cidr:10.0.0.0/33"', 1), "does not appear"),
        ("version = 1\n" + RULE + "ports = []\n", "ports: must be a non-empty list (omit it"),
        ("version = 1\n" + RULE + "ports = ['80-70']\n", "ports[1]: '80-70': the range starts"),
        ("version = 1\n" + RULE + "ports = [22, 65536]\n", "ports[2]: 65536 is outside 0-65535"),
        ("version = 1\n" + RULE + "ports = ['ssh']\n", "ports[1]: 'ssh' is not a port or a range"),
        ("version = 1\n" + RULE + "ports = ['٢٢']\n", "is not a port or a range"),
        ("version = 1\n" + RULE + "ports = [true]\n", "ports[1]: True is not a port or a range"),
        ("version = 1\n" + RULE + "ports = 22\n", "ports: must be a non-empty list"),
        (
            "version = 1\n" + RULE.replace('"tcp"', '"icmp"') + "ports = [1]\n",
            "[[rules]] #1: ports: only tcp and udp rules have ports, not icmp",
        ),
        ("version = 1\ngroups = 3\n", "policy.toml: [groups]: must be a table"),
        ("version = 1\n[groups]\na = 'group:b'\n", "[groups] a: must be a non-empty list"),
        ("version = 1\n[groups]\na = ['*']\n", "[groups] a: '*' cannot be a group member"),
        (
            "version = 1\n[groups]\na = ['host:Bad_Name']\n",
            "[groups] a: member 1 ('host:Bad_Name')",
        ),
        ("version = 1\n[groups]\nA = ['group:x']\na = ['group:y']\n", "'a' is defined twice"),
        (
            "version = 1\n[groups]\na = ['group:b']\nb = ['group:c']\nc = ['group:a']\n",
            "[groups] a: [groups] refer to each other in a loop: group:a -> group:b -> group:c -> "
            "group:a",
        ),
        ("version = 1\n[hosts]\nlab = 3\n", "[hosts] lab: must be a non-empty list of strings"),
        ("version = 1\n[hosts]\nlab = 'lab.example'\n", "[hosts] lab: 'lab.example' does not"),
        ("version = 1\n[hosts]\n'l b' = '10.0.0.1'\n", "[hosts] l b: name: name 'l b'"),
    ],
)
def test_every_mistake_is_an_error_naming_where(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, "policy.toml")
    assert expected in str(caught.value)
    assert str(caught.value).startswith("policy.toml: ")
    assert caught.value.exit_status == 2


TEST = '[[tests]]\nfrom = "host:a"\nto = "host:b"\nproto = "tcp"\nport = 22\nexpect = "allow"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            TEST.replace('expect = "allow"', 'expect = "yes"'),
            "#1: expect: 'yes' is not allow or deny",
        ),
        (TEST.replace('expect = "allow"\n', ""), "#1: expect: None is not allow or deny"),
        (TEST.replace('"host:a"', '"*"'), "#1: from: '*' is not one endpoint"),
        (TEST.replace('"host:b"', '"cidr:10.0.0.0/8"'), "#1: to: 'cidr:10.0.0.0/8' is a prefix"),
        (TEST.replace('"host:b"', '"host:lab"'), "#1: to: [hosts] lab is 10.20.0.0/24, not one"),
        (TEST.replace('from = "host:a"\n', ""), "[[tests]] #1: 'from' is required"),
        (TEST.replace('proto = "tcp"', 'proto = "any"'), "#1: proto: 'any' is not one of tcp,"),
        (TEST.replace("port = 22\n", ""), "[[tests]] #1: 'port' is required for tcp"),
        (TEST.replace("port = 22", "port = 70000"), "#1: port: 70000 is outside 0-65535"),
        (TEST.replace("port = 22", 'port = "22"'), "#1: port: '22' is not a port number"),
        (TEST.replace('proto = "tcp"', 'proto = "icmp"'), "[[tests]] #1: port: icmp has no ports"),
        (TEST + "from_groups = []\n", "#1: from_groups: must be a non-empty list"),
        (TEST + "from_groups = ['a b']\n", "#1: from_groups: group: name 'a b'"),
        (TEST + "from_address = '10.0.0.300'\n", "#1: from_address: '10.0.0.300' does not"),
        (TEST + "expected = 'deny'\n", "[[tests]] #1: unknown key 'expected'"),
        (
            TEST.replace('"host:a"', '"cidr:10.0.0.1"') + "from_groups = ['dev']\n",
            "#1: from: a cidr: endpoint has no certificate",
        ),
        (
            TEST.replace('"host:b"', '"host:gw"') + "to_address = '10.0.0.9'\n",
            "#1: to: [hosts] gw has no certificate",
        ),
    ],
)
def test_every_test_mistake_is_an_error_naming_the_test(text: str, expected: str) -> None:
    source = 'version = 1\n[hosts]\nlab = "10.20.0.0/24"\ngw = "10.20.0.1"\n' + text
    with pytest.raises(ConfigError) as caught:
        parse_policy(source, "policy.toml")
    assert str(caught.value).startswith("policy.toml: [[tests]] #1")
    assert expected in str(caught.value)


def test_one_group_for_a_test_endpoint_may_be_a_string() -> None:
    (test,) = parse_policy("version = 1\n" + TEST + "to_groups = 'web'\n").tests
    assert test.destination.groups == {"web"}


def test_the_second_rule_is_named_by_its_number() -> None:
    text = "version = 1\n" + RULE + RULE.replace('"tcp"', '"tcpp"')
    with pytest.raises(ConfigError, match=r"\[\[rules\]\] #2: proto: 'tcpp'"):
        parse_policy(text, "p.toml")


def test_a_source_over_64_kib_is_refused_before_parsing() -> None:
    text = "version = 1\n" + "#" * MAX_POLICY_BYTES
    with pytest.raises(ConfigError, match="more than the 65536 a policy may have"):
        parse_policy(text, "big.toml")


def test_rule_and_test_counts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "MAX_RULES", 2)
    monkeypatch.setattr(model, "MAX_TESTS", 1)
    parse_policy("version = 1\n" + RULE * 2)
    with pytest.raises(ConfigError, match=r"more than 2 \[\[rules\]\] tables"):
        parse_policy("version = 1\n" + RULE * 3)
    with pytest.raises(ConfigError, match=r"more than 1 \[\[tests\]\] tables"):
        parse_policy("version = 1\n" + TEST * 2)


def test_group_nesting_is_bounded() -> None:
    chain = "\n".join(f'g{i} = ["group:g{i + 1}"]' for i in range(20))
    with pytest.raises(ConfigError, match="nest more than 16 levels deep"):
        parse_policy(f"version = 1\n[groups]\n{chain}\n")
    shallow = "\n".join(f'g{i} = ["group:g{i + 1}"]' for i in range(10))
    policy = parse_policy(f"version = 1\n[groups]\n{shallow}\n")
    assert policy.groups["g0"].groups == {f"g{i}" for i in range(11)}


def test_names_are_compared_in_lower_case() -> None:
    policy = parse_policy(
        'version = 1\n[hosts]\nLab = "10.0.0.0/8"\n[[rules]]\nfrom = ["Group:Dev", "HOST:Alice"]\n'
        'to = ["host:LAB"]\nproto = "Udp"\n'
    )
    (rule,) = policy.rules
    assert rule.sources.groups == {"dev"} and rule.sources.names == {"alice"}
    assert rule.destinations.networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert rule.protocol is Protocol.UDP
