"""The fair order, client names and metric labels behind fair sharing, on their own."""

from __future__ import annotations

from service_kit.http.auth import ApiKeys
from service_kit.http.client_identity import (
    ANONYMOUS,
    OTHER,
    ClientLabels,
    key_identity,
    resolve_client,
)
from service_kit.replicas.admission import FairOrder


def client_of(item: str) -> str:
    return item[0]


def take(order: FairOrder, queue: list[str]) -> str:
    """What the admission queue does for a batch of one: the first unit in fair order goes, and
    its client counts as served."""
    item = order.arrange(queue, client_of)[0]
    queue.remove(item)
    order.served(client_of(item))
    return item


def test_fair_order_takes_clients_in_turn_each_in_its_own_order() -> None:
    order = FairOrder()
    queue = ["a1", "a2", "a3", "a4", "b1", "c1", "b2"]
    assert [take(order, queue) for _ in range(7)] == ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]
    assert not queue


def test_a_newcomer_is_served_next_not_after_the_running_client_s_next_item() -> None:
    # Issue 31, class 1: b0 arrives while a0 runs; a1 no longer goes first.
    order = FairOrder()
    queue = [f"a{i}" for i in range(5)]
    assert take(order, queue) == "a0"
    queue.append("b0")
    assert [take(order, queue) for _ in range(2)] == ["b0", "a1"]


def test_a_client_served_long_ago_counts_as_new_and_memory_is_bounded() -> None:
    order = FairOrder(memory=2)
    for client in ("a", "b", "c"):  # a is forgotten: it was served longest ago
        order.served(client)
    assert order.arrange(["c1", "b1", "a1"], client_of) == ["a1", "b1", "c1"]


def test_fair_order_interleaves_a_list_by_client() -> None:
    assert FairOrder().arrange(["a1", "a2", "a3", "b1"], client_of) == ["a1", "b1", "a2", "a3"]


def test_client_is_the_key_digest_when_keys_are_on_never_the_key() -> None:
    keys = ApiKeys(["secret-one", "secret-two"])
    headers = {b"authorization": b"Bearer secret-two", b"x-editbench-client": b"alice/run"}
    name = resolve_client(headers, keys)
    assert name == key_identity("secret-two") and "secret" not in name
    assert resolve_client(headers, ApiKeys([])) == "alice/run"
    assert resolve_client({}, ApiKeys([])) == ANONYMOUS
    assert resolve_client({b"x-editbench-client": b"bob/r un\n"}, ApiKeys([])) == "bob/r_un"


def test_client_labels_name_at_most_the_limit_and_fold_the_rest() -> None:
    labels = ClientLabels(limit=2)
    assert [labels(c) for c in ["a", "b", "c", "a"]] == ["a", "b", OTHER, "a"]
    assert labels.depths({"c": 3, "d": 1}) == {"a": 0, "b": 0, OTHER: 4}
