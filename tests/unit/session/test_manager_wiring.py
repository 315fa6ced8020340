"""SessionManager's data path is Transport's own methods, bound: no wrapper call per packet."""

from __future__ import annotations

from gossipmesh.session.transport import Transport
from tests.unit.session.pair import make_manager

DATA_PATH = ("encrypt_for", "encrypt_many", "open_transport", "open_many")


def test_data_path_is_bound_straight_from_one_transport() -> None:
    manager = make_manager(1)
    bound = [getattr(manager, name) for name in DATA_PATH]
    for name, method in zip(DATA_PATH, bound, strict=True):
        assert method.__func__ is getattr(Transport, name), name
    assert len({id(method.__self__) for method in bound}) == 1
